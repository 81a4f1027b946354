package pool

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"
)

// parseAll runs the parser over input and returns every accepted row.
func parseAll(t *testing.T, format Format, input string) ([]importRow, *parser, error) {
	t.Helper()
	var rows []importRow
	p := &parser{format: format, now: time.Now(), batchSize: 3, emit: func(b []importRow) error {
		rows = append(rows, b...)
		return nil
	}}
	// OneByteReader splits the input everywhere, also inside lines.
	err := p.run(iotest.OneByteReader(strings.NewReader(input)))
	return rows, p, err
}

func codesOf(rows []importRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.code
	}
	return out
}

func TestValidateCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code string
		ok   bool
	}{
		{"ABCD", true},
		{"ABC", false},
		{strings.Repeat("x", 128), true},
		{strings.Repeat("x", 129), false},
		{"ÄÖÜß", true}, // four characters, eight bytes
		{"AB CD", false},
		{"AB\tCD", false},
		{"ABC\x00D", false},
		{"ABC\x7fD", false},
		{"AB\u00a0CD", false}, // no-break space
		{"AB\u200bCD", false}, // zero-width space is not printable
		{"AB\xffCD", false},
		{"gift-CARD_01/2026=", true},
	}
	for _, tt := range tests {
		reason := ValidateCode(tt.code)
		require.Equal(t, tt.ok, reason == "", "code %q: %s", tt.code, reason)
		if reason != "" {
			require.NotContains(t, reason, tt.code)
		}
	}
}

func TestParseLines(t *testing.T) {
	t.Parallel()
	input := "\xef\xbb\xbfAAAA-0001\r\n\r\n  AAAA-0002  \nBAD\n\nAAAA 0003\nAAAA-0004"
	rows, p, err := parseAll(t, FormatLines, input)
	require.NoError(t, err)
	require.Equal(t, []string{"AAAA-0001", "AAAA-0002", "AAAA-0004"}, codesOf(rows))
	require.EqualValues(t, 5, p.lines)
	require.EqualValues(t, 2, p.invalid)
	require.Equal(t, []InvalidLine{
		{Line: 4, Reason: "code is shorter than 4 characters"},
		{Line: 6, Reason: "contains a space or control character"},
	}, p.samples)
}

func TestParseLinesLongLine(t *testing.T) {
	t.Parallel()
	input := "AAAA-0001\n" + strings.Repeat("x", 3*maxLineBytes) + "\nAAAA-0002\n"
	rows, p, err := parseAll(t, FormatLines, input)
	require.NoError(t, err)
	require.Equal(t, []string{"AAAA-0001", "AAAA-0002"}, codesOf(rows))
	require.Equal(t, []InvalidLine{{Line: 2, Reason: "line is longer than 65536 bytes"}}, p.samples)
}

func TestParseLinesSamplesCapped(t *testing.T) {
	t.Parallel()
	input := strings.Repeat("bad\n", 250)
	_, p, err := parseAll(t, FormatLines, input)
	require.NoError(t, err)
	require.EqualValues(t, 250, p.invalid)
	require.Len(t, p.samples, maxInvalidSamples)
	require.EqualValues(t, 100, p.samples[99].Line)
}

func TestParseCSV(t *testing.T) {
	t.Parallel()
	future := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	input := "\xef\xbb\xbfExpires_At, code\r\n" +
		future.Format(time.RFC3339) + ",CSV-0001\r\n" +
		",CSV-0002\r\n" +
		"\r\n" +
		"2001-01-01T00:00:00Z,CSV-0003\r\n" +
		"tomorrow,CSV-0004\r\n" +
		",CSV-0005,extra\r\n" +
		`,"CSV,0006"` + "\r\n" +
		`,"unterminated` + "\n"
	rows, p, err := parseAll(t, FormatCSV, input)
	require.NoError(t, err)
	require.Equal(t, []string{"CSV-0001", "CSV-0002", "CSV,0006"}, codesOf(rows))
	require.True(t, rows[0].expiresAt.Equal(future))
	require.True(t, rows[1].expiresAt.IsZero())
	require.EqualValues(t, 7, p.lines)
	require.Equal(t, []InvalidLine{
		{Line: 5, Reason: "expires_at is in the past"},
		{Line: 6, Reason: "expires_at is not an RFC 3339 time"},
		{Line: 7, Reason: "has 3 fields, the header has 2"},
		{Line: 9, Reason: `malformed CSV: extraneous or missing " in quoted-field`},
	}, p.samples)
}

func TestParseCSVHeaderErrors(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"expires_at\n2030-01-01T00:00:00Z\n": `csv header: no "code" column`,
		"code,expire_at\nAAAA,\n":            "csv header: column 2 has an unknown name (known: code, expires_at); is this a file of one code per line?",
		"SECRET-CODE-1\nSECRET-CODE-2\n":     "csv header: column 1 has an unknown name (known: code, expires_at); is this a file of one code per line?",
		"code,code\n":                        `csv header: column "code" appears twice`,
	}
	for input, want := range tests {
		_, _, err := parseAll(t, FormatCSV, input)
		var he *HeaderError
		require.ErrorAs(t, err, &he, input)
		require.Equal(t, want, err.Error())
		require.NotContains(t, err.Error(), "SECRET")
	}
}

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	for _, f := range []Format{FormatLines, FormatCSV} {
		rows, p, err := parseAll(t, f, "")
		require.NoError(t, err)
		require.Empty(t, rows)
		require.Zero(t, p.lines)
	}
}

func TestParseReadErrorStops(t *testing.T) {
	t.Parallel()
	boom := errors.New("stream cut")
	for _, f := range []Format{FormatLines, FormatCSV} {
		p := &parser{format: f, now: time.Now(), batchSize: 10, emit: func([]importRow) error { return nil }}
		r := io.MultiReader(strings.NewReader("code\nAAAA-0001\nAAAA-00"), iotest.ErrReader(boom))
		require.ErrorIs(t, p.run(r), boom, f.String())
	}
}

// FuzzParseLines checks that any input parses without panic, that counts add
// up and that no reason ever repeats a line's text.
func FuzzParseLines(f *testing.F) {
	f.Add("AAAA\r\nBBBB\n\n bad \n")
	f.Add("\xef\xbb\xbf\xff\xfe\n")
	f.Fuzz(func(t *testing.T, input string) {
		var accepted int64
		p := &parser{format: FormatLines, now: time.Now(), batchSize: 7, emit: func(b []importRow) error {
			accepted += int64(len(b))
			for _, r := range b {
				require.Empty(t, ValidateCode(r.code))
			}
			return nil
		}}
		require.NoError(t, p.run(strings.NewReader(input)))
		require.Equal(t, p.lines, accepted+p.invalid)
	})
}
