// Package spdyclient is what both test clients share: the HTTP/1.1 upgrade of a streaming
// URL to SPDY/3.1 (as kubelet's proxy and kubectl make it) and the spdystream connection
// on top, written on Docker's SPDY/3.1 library, independent of podbay.
package spdyclient

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io/ioutil"
	"net"
	"net/http"
	"net/url"
	"os"

	"github.com/docker/spdystream"
)

// Fail prints the message with the program's name and exits with status 2.
func Fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, os.Args[0]+": "+format+"\n", args...)
	os.Exit(2)
}

// bufferedConn reads what the HTTP response reader already buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Dial upgrades rawURL (http, or https with the CA in the PEM file ca) to SPDY/3.1,
// offering proto as X-Stream-Protocol-Version (none when empty), and serves the
// connection. A refused upgrade prints the status and body and exits with status 3.
// It returns the connection and the protocol the server chose.
func Dial(rawURL, proto, ca string) (*spdystream.Connection, string) {
	u, err := url.Parse(rawURL)
	if err != nil {
		Fail("url: %v", err)
	}
	var conn net.Conn
	if u.Scheme == "https" {
		pool := x509.NewCertPool()
		pem, err := ioutil.ReadFile(ca)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			Fail("-ca %q: %v", ca, err)
		}
		conn, err = tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, ServerName: u.Hostname()})
		if err != nil {
			Fail("tls: %v", err)
		}
	} else {
		conn, err = net.Dial("tcp", u.Host)
		if err != nil {
			Fail("dial: %v", err)
		}
	}
	req, _ := http.NewRequest("POST", u.String(), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	if proto != "" {
		req.Header.Add("X-Stream-Protocol-Version", proto)
	}
	if err := req.Write(conn); err != nil {
		Fail("request: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		Fail("response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := ioutil.ReadAll(resp.Body)
		fmt.Fprintf(os.Stderr, "status %d: %s", resp.StatusCode, body)
		os.Exit(3)
	}
	sc, err := spdystream.NewConnection(&bufferedConn{conn, br}, false)
	if err != nil {
		Fail("spdy: %v", err)
	}
	go sc.Serve(spdystream.NoOpStreamHandler)
	return sc, resp.Header.Get("X-Stream-Protocol-Version")
}
