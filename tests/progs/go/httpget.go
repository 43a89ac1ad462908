// SPDX-License-Identifier: MIT
// A Go net/http client for the proxy's runtime tests: Go's own TLS stack (crypto/tls), which
// the shim cannot see. Trusts what SSL_CERT_FILE names (Go's rule on Linux).
//
//	httpget METHOD URL [N]   sends the request N times on one keep-alive client; prints
//	                         "STATUS <code>" and the body of the last answer
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: httpget METHOD URL [N]")
		os.Exit(2)
	}
	n := 1
	if len(os.Args) > 3 {
		n, _ = strconv.Atoi(os.Args[3])
	}
	client := &http.Client{}
	for i := 0; i < n; i++ {
		req, err := http.NewRequest(os.Args[1], os.Args[2], nil)
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(3)
		}
		req.Header.Set("Authorization", "Bearer service-account-key")
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(3)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if i == n-1 {
			fmt.Printf("STATUS %d\n%s\n", resp.StatusCode, body)
		}
	}
}
