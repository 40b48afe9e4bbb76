//go:build !linux

package wire

import (
	"io"
	"net"
)

// fastIO is c itself where rawIO does not exist.
func fastIO(c net.Conn) io.ReadWriter { return c }
