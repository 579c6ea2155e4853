// The Go baseline of the warm path: a net/http TLS endpoint that parses the review and
// answers allowed, as benchmarks/noop.py does on aiohttp. Run with GOMAXPROCS=1 on the
// webhook's core, it says how far one Python process is from what one core can serve.
//
//	noop-go CERT KEY    # prints "listening on https://127.0.0.1:PORT"
//
// Standard library only, so it builds offline with GO111MODULE=off.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

type review struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    struct {
		UID string `json:"uid"`
	} `json:"request"`
}

type response struct {
	UID     string `json:"uid"`
	Allowed bool   `json:"allowed"`
}

type answer struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Response   response `json:"response"`
}

func allow(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 3<<20+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var in review
	if err := json.Unmarshal(body, &in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, _ := json.Marshal(answer{in.APIVersion, in.Kind, response{in.Request.UID, true}})
	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: noop-go CERT KEY")
		os.Exit(2)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on https://%s\n", listener.Addr())
	mux := http.NewServeMux()
	mux.HandleFunc("/mutate/", allow)
	// wrk closes its probe connection mid-handshake on every run: not worth a line each
	server := &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)}
	fmt.Fprintln(os.Stderr, server.ServeTLS(listener, os.Args[1], os.Args[2]))
	os.Exit(1)
}
