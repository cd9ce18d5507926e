package httpapi

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// ErrUnauthenticatedListen: an API without keys was asked to listen on an
// address other hosts can reach.
var ErrUnauthenticatedListen = errors.New("without an API key the management API listens only on a loopback address (127.0.0.1, ::1 or localhost)")

// ValidateListenAddress checks a host:port listen address for the API.
// Without keys (authenticated false) only loopback hosts are accepted: a
// literal loopback IP or "localhost". An empty host, 0.0.0.0, :: and other
// names all mean reachable from elsewhere and are refused with
// ErrUnauthenticatedListen.
func ValidateListenAddress(addr string, authenticated bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if port == "" {
		return fmt.Errorf("listen address %q has no port", addr)
	}
	if authenticated || isLoopback(host) {
		return nil
	}
	return fmt.Errorf("listen address %q: %w", addr, ErrUnauthenticatedListen)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
