// spdyexec: a Kubernetes remotecommand client (what kubelet's proxy and crictl speak to a
// runtime's Exec URL), written on Docker's SPDY/3.1 library, independent of podbay.
//
//	spdyexec [-stdin] [-stdout] [-stderr] [-tty -width W -height H] [-proto P] [-status FILE] [-hold] [-ca PEM] URL
//
// It upgrades the connection to SPDY/3.1, opens the error stream and one stream per
// requested stdio (header streamType), copies its own stdin, stdout and stderr to and
// from them, and writes what the error stream carried to FILE. With -hold it opens the
// streams and then waits (a client that goes away is killed from outside). With -tty it
// also opens the resize stream and sends the terminal size on it, as kubectl exec -t does.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"

	"github.com/docker/spdystream"
)

// bufferedConn reads what the HTTP response reader already buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "spdyexec: "+format+"\n", args...)
	os.Exit(2)
}

func main() {
	withStdin := flag.Bool("stdin", false, "send stdin")
	withStdout := flag.Bool("stdout", false, "receive stdout")
	withStderr := flag.Bool("stderr", false, "receive stderr")
	proto := flag.String("proto", "v4.channel.k8s.io", "X-Stream-Protocol-Version offered")
	statusFile := flag.String("status", "", "where the error stream's content goes")
	hold := flag.Bool("hold", false, "open the streams, then wait forever")
	tty := flag.Bool("tty", false, "open the resize stream and send -width and -height")
	ca := flag.String("ca", "", "PEM file of the CA that signed an https server's certificate")
	width := flag.Int("width", 80, "terminal columns")
	height := flag.Int("height", 24, "terminal rows")
	flag.Parse()
	u, err := url.Parse(flag.Arg(0))
	if err != nil {
		fail("url: %v", err)
	}
	var conn net.Conn
	if u.Scheme == "https" {
		pool := x509.NewCertPool()
		pem, err := ioutil.ReadFile(*ca)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			fail("-ca %q: %v", *ca, err)
		}
		conn, err = tls.Dial("tcp", u.Host, &tls.Config{RootCAs: pool, ServerName: u.Hostname()})
		if err != nil {
			fail("tls: %v", err)
		}
	} else {
		conn, err = net.Dial("tcp", u.Host)
		if err != nil {
			fail("dial: %v", err)
		}
	}
	req, _ := http.NewRequest("POST", u.String(), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	if *proto != "" {
		req.Header.Add("X-Stream-Protocol-Version", *proto)
	}
	if err := req.Write(conn); err != nil {
		fail("request: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		fail("response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := ioutil.ReadAll(resp.Body)
		fmt.Fprintf(os.Stderr, "status %d: %s", resp.StatusCode, body)
		os.Exit(3)
	}
	fmt.Fprintf(os.Stderr, "protocol: %s\n", resp.Header.Get("X-Stream-Protocol-Version"))
	sc, err := spdystream.NewConnection(&bufferedConn{conn, br}, false)
	if err != nil {
		fail("spdy: %v", err)
	}
	go sc.Serve(spdystream.NoOpStreamHandler)
	open := func(kind string) *spdystream.Stream {
		s, err := sc.CreateStream(http.Header{"streamType": {kind}}, nil, false)
		if err != nil {
			fail("stream %s: %v", kind, err)
		}
		return s
	}
	errStream := open("error")
	var wg sync.WaitGroup
	if *withStdin {
		s := open("stdin")
		if !*hold {
			go func() {
				io.Copy(s, os.Stdin)
				s.Close()
			}()
		}
	}
	copyOut := func(kind string, w io.Writer) {
		s := open(kind)
		wg.Add(1)
		go func() {
			defer wg.Done()
			io.Copy(w, s)
		}()
	}
	if *withStdout {
		copyOut("stdout", os.Stdout)
	}
	if *tty {
		r := open("resize")
		fmt.Fprintf(r, "{\"Width\":%d,\"Height\":%d}\n", *width, *height)
	}
	if *withStderr {
		copyOut("stderr", os.Stderr)
	}
	if *hold {
		fmt.Fprintln(os.Stderr, "holding")
		select {}
	}
	status, _ := ioutil.ReadAll(errStream)
	wg.Wait()
	if *statusFile != "" {
		ioutil.WriteFile(*statusFile, status, 0o644)
	}
	sc.Close()
}
