package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// ErrInsecureURL means a webhook URL is plain http to a host that is not
// loopback: the code in the body would cross the network in clear.
var ErrInsecureURL = errors.New("webhook: URL must use https (plain http only to a loopback host)")

// ErrUnroutableHost means a webhook URL's host is an address no webhook
// receiver has: link-local (169.254.0.0/16, fe80::/10, where cloud metadata
// services answer), multicast or unspecified.
var ErrUnroutableHost = errors.New("webhook: host must not be a link-local, multicast or unspecified address")

// CheckURL accepts an absolute https URL, or an http one to a loopback host
// (localhost, 127.0.0.0/8, ::1; names are not resolved). With
// allowInsecure, plain http goes anywhere: for operators who terminate TLS
// elsewhere on a network they trust. A host written as a link-local,
// multicast or unspecified address is refused either way; a name that
// resolves to one is refused when a delivery dials it (DialControl).
func CheckURL(raw string, allowInsecure bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return errors.New("webhook: URL must be an absolute http or https URL")
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && unroutable(ip) {
		return ErrUnroutableHost
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

// unroutable reports whether ip is an address no webhook receiver has.
func unroutable(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified()
}

// DialControl is a net.Dialer's Control for the deliveries' connections: it
// refuses to connect to an address CheckURL would refuse as a host, after
// the name is resolved, so a webhook's name cannot lead a delivery (and the
// code in its body) to the cloud metadata service.
func DialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook: dialing %q: %w", address, err)
	}
	if unroutable(ap.Addr()) {
		return ErrUnroutableHost
	}
	return nil
}
