// Command storm drives the benchmark's restart storm with grpc-go, the client stack of istio-agent:
// every prepared call at once over a fixed set of connections, UNAVAILABLE and RESOURCE_EXHAUSTED
// retried with istio-agent's backoff (100 ms doubling, jittered, five retries), as bench/run.ts's
// node:http2 driver does. It exists because the storm's client shares the two vCPUs with the server,
// and node:http2 spent about 200 µs of them per call (measured), grpc-go far less.
//
// bench/run.ts builds it from Debian's Go packages (GOPATH mode, offline), writes the calls to a
// file (one per line: token, a tab, the base64 of the encoded IstioCertificateRequest), and talks
// to it over stdio: this program prints {"ready":true} once every connection is up, starts the
// calls when a line arrives on stdin, and prints one JSON result.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"math/rand"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

const method = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

// Matches bench/lib/h2-client.ts: a call that never ends is cancelled and counted as an error. A
// cancellation, not a deadline: istio-agent sends no grpc-timeout, so the server sees none here.
const callLimit = 120 * time.Second

type call struct {
	token string
	body  []byte
}

type result struct {
	OK int `json:"ok"`
	// Calls that ended without OK, whatever the code, once their retries (if any) were used up:
	// calls = ok + failed. A RESOURCE_EXHAUSTED or UNAVAILABLE on the last try is counted here.
	Failed int `json:"failed"`
	// UNAVAILABLE answers, each retried unless its call had no retries left.
	Unavailable int `json:"unavailable"`
	// RESOURCE_EXHAUSTED answers: retried as istio-agent retries them, but an error of the server's.
	ResourceExhausted int `json:"resourceExhausted"`
	// Calls that ended with a code that is never retried.
	OtherErrors int            `json:"otherErrors"`
	ErrorCodes  map[string]int `json:"errorCodes"`
	Retries     int            `json:"retries"`
	Reconnects  int64          `json:"reconnects"`
	LatenciesMs []float64      `json:"latenciesMs"`
	ElapsedMs   float64        `json:"elapsedMs"`
	// The driver's own CPU from the start of the calls to the last answer.
	CPUSeconds float64 `json:"cpuSeconds"`
	// A few responses (the encoded IstioCertificateResponse, base64), for correctness checks.
	Samples []string `json:"samples"`
	Error   string   `json:"error,omitempty"`
}

// rawCodec sends and receives the messages as bytes: the requests are encoded once, before the
// timed phase, by the same code as the node:http2 driver's.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// connCounter counts transport connections opened, so that reconnects can be reported.
type connCounter struct{ n int64 }

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                       {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnBegin); ok {
		atomic.AddInt64(&c.n, 1)
	}
}

// slotOf is h2-client.ts's slotOf: calls spread evenly over the connections, not in step with i.
func slotOf(i, n int) int {
	return int((uint32(i)*0x9e3779b1)>>16) % n
}

func main() {
	addr := flag.String("addr", "", "host:port of the CA")
	rootFile := flag.String("root", "", "PEM root the client trusts")
	serverName := flag.String("server-name", "localhost", "TLS server name")
	callsFile := flag.String("calls", "", "file of calls: token TAB base64(request) per line")
	connections := flag.Int("connections", 50, "connections the calls are spread over")
	flag.Parse()

	r := &result{ErrorCodes: map[string]int{}}
	if err := run(r, *addr, *rootFile, *serverName, *callsFile, *connections); err != nil {
		r.Error = err.Error()
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
	if r.Error != "" {
		os.Exit(1)
	}
}

func readCalls(path string) ([]call, error) {
	data, err := ioutil.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var calls []call
	for n, line := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		tab := strings.IndexByte(line, '\t')
		if tab < 0 {
			return nil, fmt.Errorf("%s:%d: no tab", path, n+1)
		}
		body, err := base64.StdEncoding.DecodeString(line[tab+1:])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n+1, err)
		}
		calls = append(calls, call{token: line[:tab], body: body})
	}
	return calls, nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func run(r *result, addr, rootFile, serverName, callsFile string, connections int) error {
	if connections < 1 {
		return errors.New("-connections must be at least 1")
	}
	calls, err := readCalls(callsFile)
	if err != nil {
		return err
	}
	rootPEM, err := ioutil.ReadFile(rootFile)
	if err != nil {
		return err
	}
	trusted := x509.NewCertPool()
	if !trusted.AppendCertsFromPEM(rootPEM) {
		return errors.New("no certificate in the root file")
	}
	tlsConf := &tls.Config{RootCAs: trusted, ServerName: serverName, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}

	// One ClientConn per connection: grpc-go keeps one HTTP/2 connection per ClientConn. Opened
	// before the timed phase, 32 handshakes at a time (one per pod in a real restart: thousands).
	counter := &connCounter{}
	conns := make([]*grpc.ClientConn, connections)
	dialErrs := make([]error, connections)
	sem := make(chan struct{}, 32)
	var dialing sync.WaitGroup
	for i := range conns {
		dialing.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; dialing.Done() }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			conns[i], dialErrs[i] = grpc.DialContext(ctx, addr,
				grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)),
				grpc.WithBlock(),
				grpc.WithStatsHandler(counter),
				grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		}(i)
	}
	dialing.Wait()
	defer func() {
		for _, cc := range conns {
			if cc != nil {
				cc.Close()
			}
		}
	}()
	for i, err := range dialErrs {
		if err != nil {
			return fmt.Errorf("connection %d: %w", i+1, err)
		}
	}

	fmt.Println(`{"ready":true}`)
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return fmt.Errorf("waiting for the start line: %w", err)
	}

	cpu0 := cpuSeconds()
	started := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(len(calls))
	for i := range calls {
		go func(i int) {
			defer wg.Done()
			one(r, &mu, conns[slotOf(i, connections)], calls[i])
		}(i)
	}
	wg.Wait()
	r.ElapsedMs = float64(time.Since(started).Nanoseconds()) / 1e6
	r.CPUSeconds = cpuSeconds() - cpu0
	r.Reconnects = atomic.LoadInt64(&counter.n) - int64(connections)
	return nil
}

// one makes a call until it succeeds, fails with a code not retried, or has been retried five times.
func one(r *result, mu *sync.Mutex, cc *grpc.ClientConn, c call) {
	t0 := time.Now()
	md := metadata.Pairs("authorization", "Bearer "+c.token, "clusterid", "Kubernetes")
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(context.Background(), md))
		limit := time.AfterFunc(callLimit, cancel)
		var resp []byte
		err := cc.Invoke(ctx, method, c.body, &resp)
		limit.Stop()
		cancel()
		code := status.Code(err)
		mu.Lock()
		if code == codes.OK {
			r.OK++
			r.LatenciesMs = append(r.LatenciesMs, float64(time.Since(t0).Nanoseconds())/1e6)
			if len(r.Samples) < 5 {
				r.Samples = append(r.Samples, base64.StdEncoding.EncodeToString(resp))
			}
			mu.Unlock()
			return
		}
		retryable := code == codes.Unavailable || code == codes.ResourceExhausted
		if code == codes.Unavailable {
			r.Unavailable++
		}
		if code == codes.ResourceExhausted {
			r.ResourceExhausted++
		}
		if retryable && attempt < 5 {
			r.Retries++
			mu.Unlock()
			time.Sleep(time.Duration(float64(100*time.Millisecond) * float64(int(1)<<attempt) * (0.5 + rand.Float64())))
			continue
		}
		if !retryable {
			r.OtherErrors++
		}
		r.Failed++
		r.ErrorCodes[fmt.Sprint(uint32(code))]++
		mu.Unlock()
		return
	}
}
