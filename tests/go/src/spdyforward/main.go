// spdyforward: a Kubernetes port-forward client (what kubelet's proxy and kubectl
// port-forward speak to a runtime's PortForward URL), written on Docker's SPDY/3.1
// library, independent of podbay.
//
//	spdyforward [-n N] [-norequestid] [-ports P1,P2...] URL PORT < request
//
// It upgrades the connection to SPDY/3.1 (portforward.k8s.io) and makes N forwarded
// connections at once over it, each a pair of streams (error, data) with headers port and
// requestID; each sends the request read from stdin, closes its side and reads the
// answer. It prints, per connection in order, "=== i ===", what came back on data, and
// "!!! <message>" when the error stream carried one.
package main

import (
	"flag"
	"fmt"
	"io/ioutil"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"spdyclient"
)

func main() {
	n := flag.Int("n", 1, "connections at once")
	noID := flag.Bool("norequestid", false, "send no requestID header (old clients)")
	ports := flag.String("ports", "", "comma-separated ports, connection i to the i-th (cycling) instead of PORT")
	flag.Parse()
	portFor := func(i int) string { return flag.Arg(1) }
	if *ports != "" {
		list := strings.Split(*ports, ",")
		portFor = func(i int) string { return list[i%len(list)] }
	}
	request, _ := ioutil.ReadAll(os.Stdin)
	sc, _ := spdyclient.Dial(flag.Arg(0), "portforward.k8s.io", "")
	var mu sync.Mutex // stream creation in pairs, as kubectl's
	results := make([]string, *n)
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			headers := func(kind string) http.Header {
				h := http.Header{"streamType": {kind}, "port": {portFor(i)}}
				if !*noID {
					h["requestID"] = []string{strconv.Itoa(i)}
				}
				return h
			}
			mu.Lock()
			errStream, err := sc.CreateStream(headers("error"), nil, false)
			if err != nil {
				mu.Unlock()
				results[i] = fmt.Sprintf("!!! create error stream: %v\n", err)
				return
			}
			errStream.Close()
			data, err := sc.CreateStream(headers("data"), nil, false)
			mu.Unlock()
			if err != nil {
				results[i] = fmt.Sprintf("!!! create data stream: %v\n", err)
				return
			}
			var msg []byte
			done := make(chan struct{})
			go func() {
				msg, _ = ioutil.ReadAll(errStream)
				close(done)
			}()
			if len(request) > 0 {
				data.Write(request)
			}
			data.Close()
			answer, _ := ioutil.ReadAll(data)
			<-done
			out := fmt.Sprintf("=== %d ===\n%s", i, answer)
			if len(msg) > 0 {
				out += fmt.Sprintf("!!! %s\n", msg)
			}
			results[i] = out
		}(i)
	}
	wg.Wait()
	for _, r := range results {
		fmt.Print(r)
	}
	sc.Close()
}
