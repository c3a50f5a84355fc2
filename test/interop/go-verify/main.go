// Command go-verify verifies certificate chains with Go's crypto/x509, as istio-agent does: one
// JSON object per input line {"root","intermediates","leaf"} (PEM), one JSON answer per line
// {"ok":bool,"error":"..."}. Standard library only.
package main

import (
	"bufio"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

type input struct {
	Root          string `json:"root"`
	Intermediates string `json:"intermediates"`
	Leaf          string `json:"leaf"`
}

type output struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	enc := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var c input
		out := output{}
		if err := json.Unmarshal(in.Bytes(), &c); err != nil {
			out.Error = "bad input: " + err.Error()
		} else if err := verify(c); err != nil {
			out.Error = err.Error()
		} else {
			out.OK = true
		}
		if err := enc.Encode(out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func verify(c input) error {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(c.Root)) {
		return errors.New("no root")
	}
	inters := x509.NewCertPool()
	inters.AppendCertsFromPEM([]byte(c.Intermediates))
	block, _ := pem.Decode([]byte(c.Leaf))
	if block == nil {
		return errors.New("no leaf")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}
