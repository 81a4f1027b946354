package pool

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Format is the layout of an import file.
type Format int

const (
	// FormatLines is one code per line.
	FormatLines Format = iota + 1
	// FormatCSV is RFC 4180 CSV with a header naming a `code` column and an
	// optional `expires_at` column (RFC 3339).
	FormatCSV
)

func (f Format) String() string {
	switch f {
	case FormatLines:
		return "lines"
	case FormatCSV:
		return "csv"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// Code length bounds, in characters.
const (
	MinCodeChars = 4
	MaxCodeChars = 128
)

// maxLineBytes bounds one line of a lines-format file; a longer line cannot
// hold a valid code and is reported invalid without being buffered whole.
const maxLineBytes = 64 << 10

// importRow is one valid line of an import file.
type importRow struct {
	line      int64
	code      string
	expiresAt time.Time // zero: never expires
}

// InvalidLine tells why a line was refused. It never carries the line's text.
type InvalidLine struct {
	Line   int64
	Reason string
}

// ValidateCode reports why code cannot be a code, or "" when it can: 4 to 128
// printable characters of valid UTF-8, none of them white space. The reason
// never repeats the code.
func ValidateCode(code string) string {
	n := 0
	for i := 0; i < len(code); {
		c := code[i]
		if c < utf8.RuneSelf {
			if c <= ' ' || c == 0x7f {
				return "contains a space or control character"
			}
			i++
		} else {
			r, size := utf8.DecodeRuneInString(code[i:])
			if r == utf8.RuneError && size == 1 {
				return "is not valid UTF-8"
			}
			if !unicode.IsPrint(r) || unicode.IsSpace(r) {
				return "contains a space or non-printable character"
			}
			i += size
		}
		n++
	}
	switch {
	case n < MinCodeChars:
		return fmt.Sprintf("code is shorter than %d characters", MinCodeChars)
	case n > MaxCodeChars:
		return fmt.Sprintf("code is longer than %d characters", MaxCodeChars)
	}
	return ""
}

// HeaderError means a CSV file's header cannot be used; nothing of the file
// can be imported.
type HeaderError struct{ Reason string }

func (e *HeaderError) Error() string { return "csv header: " + e.Reason }

// parser reads an import file and hands its valid rows out in batches.
type parser struct {
	format    Format
	now       time.Time
	batchSize int
	emit      func([]importRow) error

	lines   int64 // non-blank data lines
	invalid int64
	samples []InvalidLine // the first maxInvalidSamples invalid lines
	batch   []importRow
}

// maxInvalidSamples is how many invalid lines an import summary lists.
const maxInvalidSamples = 100

func (p *parser) reject(line int64, reason string) {
	p.invalid++
	if len(p.samples) < maxInvalidSamples {
		p.samples = append(p.samples, InvalidLine{Line: line, Reason: reason})
	}
}

func (p *parser) accept(row importRow) error {
	p.batch = append(p.batch, row)
	if len(p.batch) < p.batchSize {
		return nil
	}
	return p.flush()
}

func (p *parser) flush() error {
	if len(p.batch) == 0 {
		return nil
	}
	err := p.emit(p.batch)
	p.batch = make([]importRow, 0, p.batchSize)
	return err
}

func (p *parser) run(r io.Reader) error {
	p.batch = make([]importRow, 0, p.batchSize)
	br := bufio.NewReaderSize(r, maxLineBytes)
	if err := skipBOM(br); err != nil {
		return err
	}
	var err error
	switch p.format {
	case FormatLines:
		err = p.runLines(br)
	case FormatCSV:
		err = p.runCSV(br)
	default:
		err = fmt.Errorf("unknown format %v", p.format)
	}
	if err != nil {
		return err
	}
	return p.flush()
}

func skipBOM(br *bufio.Reader) error {
	head, err := br.Peek(3)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return err
	}
	if bytes.HasPrefix(head, []byte("\xef\xbb\xbf")) {
		_, _ = br.Discard(3)
	}
	return nil
}

func (p *parser) runLines(br *bufio.Reader) error {
	var lineNo int64
	for {
		raw, err := br.ReadSlice('\n')
		if len(raw) == 0 && errors.Is(err, io.EOF) {
			return nil
		}
		lineNo++
		if errors.Is(err, bufio.ErrBufferFull) {
			p.lines++
			p.reject(lineNo, fmt.Sprintf("line is longer than %d bytes", maxLineBytes))
			if err := discardLine(br); err != nil {
				return err
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if code := bytes.TrimSpace(raw); len(code) > 0 {
			p.lines++
			if reason := ValidateCode(string(code)); reason != "" {
				p.reject(lineNo, reason)
			} else if err := p.accept(importRow{line: lineNo, code: string(code)}); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// discardLine skips the rest of an over-long line.
func discardLine(br *bufio.Reader) error {
	for {
		_, err := br.ReadSlice('\n')
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return nil
		default:
			return err
		}
	}
}

func (p *parser) runCSV(br *bufio.Reader) error {
	cr := csv.NewReader(br)
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil // an empty file imports nothing
	}
	if err != nil {
		return csvError(err)
	}
	codeCol, expiresCol, err := parseHeader(header)
	if err != nil {
		return err
	}
	width := len(header)
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var perr *csv.ParseError
		if errors.As(err, &perr) {
			p.lines++
			p.reject(int64(perr.StartLine), "malformed CSV: "+perr.Err.Error())
			continue
		}
		if err != nil {
			return err
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // blank line, or one made of spaces
		}
		p.lines++
		if len(rec) != width {
			p.reject(int64(line), fmt.Sprintf("has %d fields, the header has %d", len(rec), width))
			continue
		}
		row := importRow{line: int64(line), code: strings.TrimSpace(rec[codeCol])}
		if reason := ValidateCode(row.code); reason != "" {
			p.reject(int64(line), reason)
			continue
		}
		if expiresCol >= 0 {
			if s := strings.TrimSpace(rec[expiresCol]); s != "" {
				t, err := time.Parse(time.RFC3339, s)
				switch {
				case err != nil:
					p.reject(int64(line), "expires_at is not an RFC 3339 time")
					continue
				case !t.After(p.now):
					p.reject(int64(line), "expires_at is in the past")
					continue
				}
				row.expiresAt = t
			}
		}
		// rec is reused by the next Read; strings.TrimSpace returned a
		// substring of it, so take a copy that the batch can keep.
		row.code = strings.Clone(row.code)
		if err := p.accept(row); err != nil {
			return err
		}
	}
}

// csvError turns a CSV syntax error in the header into a HeaderError; other
// errors (the stream broke) pass unchanged.
func csvError(err error) error {
	var perr *csv.ParseError
	if errors.As(err, &perr) {
		return &HeaderError{Reason: perr.Err.Error()}
	}
	return err
}

func parseHeader(header []string) (codeCol, expiresCol int, err error) {
	codeCol, expiresCol = -1, -1
	for i, name := range header {
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "code":
			if codeCol >= 0 {
				return 0, 0, &HeaderError{Reason: "column \"code\" appears twice"}
			}
			codeCol = i
		case "expires_at":
			if expiresCol >= 0 {
				return 0, 0, &HeaderError{Reason: "column \"expires_at\" appears twice"}
			}
			expiresCol = i
		default:
			// The name is not echoed: in a plain file sent as CSV, the
			// "header" is the first code.
			return 0, 0, &HeaderError{Reason: fmt.Sprintf("column %d has an unknown name (known: code, expires_at); is this a file of one code per line?", i+1)}
		}
	}
	if codeCol < 0 {
		return 0, 0, &HeaderError{Reason: "no \"code\" column"}
	}
	return codeCol, expiresCol, nil
}
