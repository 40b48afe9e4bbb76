//go:build !linux

package rawnet

import (
	"context"
	"net"
)

// Wrap returns c: raw system calls are Linux-only.
func Wrap(c net.Conn) net.Conn { return c }

// WrapDial returns dial.
func WrapDial(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return dial
}
