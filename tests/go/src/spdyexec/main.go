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
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net/http"
	"os"
	"sync"

	"github.com/docker/spdystream"
	"spdyclient"
)

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
	sc, chosen := spdyclient.Dial(flag.Arg(0), *proto, *ca)
	fmt.Fprintf(os.Stderr, "protocol: %s\n", chosen)
	open := func(kind string) *spdystream.Stream {
		s, err := sc.CreateStream(http.Header{"streamType": {kind}}, nil, false)
		if err != nil {
			spdyclient.Fail("stream %s: %v", kind, err)
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
