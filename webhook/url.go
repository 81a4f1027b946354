package webhook

import (
	"errors"
	"net"
	"net/url"
	"strings"
)

// ErrInsecureURL means a webhook URL is plain http to a host that is not
// loopback: the code in the body would cross the network in clear.
var ErrInsecureURL = errors.New("webhook: URL must use https (plain http only to a loopback host)")

// CheckURL accepts an absolute https URL, or an http one to a loopback host
// (localhost, 127.0.0.0/8, ::1; names are not resolved). With
// allowInsecure, plain http goes anywhere: for operators who terminate TLS
// elsewhere on a network they trust.
func CheckURL(raw string, allowInsecure bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return errors.New("webhook: URL must be an absolute http or https URL")
	}
	if u.Scheme == "https" || allowInsecure || isLoopback(u.Hostname()) {
		return nil
	}
	return ErrInsecureURL
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
