// A client of the streaming server built on moby/spdystream, the SPDY implementation
// client-go and kube-apiserver use: it checks that this server's SPDY framing and header
// compression interoperate with the Go one.
//
//	spdystream exec URL STDIN        prints stdout, then the error stream on the last line
//	spdystream forward URL PORT REQ  prints what the pod answered
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"

	"github.com/moby/spdystream"
)

func dial(raw, protocol string) *spdystream.Connection {
	u, err := url.Parse(raw)
	check(err)
	conn, err := net.Dial("tcp", u.Host)
	check(err)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: %s\r\n\r\n", u.Path, u.Host, protocol)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	check(err)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		check(fmt.Errorf("upgrade: %s", resp.Status))
	}
	sc, err := spdystream.NewConnection(conn, false)
	check(err)
	go sc.Serve(spdystream.NoOpStreamHandler)
	return sc
}

func open(sc *spdystream.Connection, h http.Header) *spdystream.Stream {
	s, err := sc.CreateStream(h, nil, false)
	check(err)
	check(s.Wait())
	return s
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func main() {
	switch os.Args[1] {
	case "exec":
		sc := dial(os.Args[2], "v4.channel.k8s.io")
		_, err := sc.Ping()
		check(err)
		errStream := open(sc, http.Header{"Streamtype": {"error"}})
		stdin := open(sc, http.Header{"Streamtype": {"stdin"}})
		stdout := open(sc, http.Header{"Streamtype": {"stdout"}})
		stderr := open(sc, http.Header{"Streamtype": {"stderr"}})
		_, err = stdin.Write([]byte(os.Args[3]))
		check(err)
		check(stdin.Close())
		go io.Copy(io.Discard, stderr)
		out, _ := io.ReadAll(stdout)
		status, _ := io.ReadAll(errStream)
		fmt.Printf("%s\n%s\n", out, status)
	case "forward":
		sc := dial(os.Args[2], "portforward.k8s.io")
		h := http.Header{"Streamtype": {"error"}, "Port": {os.Args[3]}, "Requestid": {"1"}}
		errStream := open(sc, h)
		h = http.Header{"Streamtype": {"data"}, "Port": {os.Args[3]}, "Requestid": {"1"}}
		data := open(sc, h)
		_, err := data.Write([]byte(os.Args[4]))
		check(err)
		out, _ := io.ReadAll(data)
		errs, _ := io.ReadAll(errStream)
		fmt.Printf("%s%s", out, errs)
	}
}
