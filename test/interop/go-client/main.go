// Command go-client is an independent check of meshcert's wire contract: a grpc-go client and
// Go's crypto/x509 (the stacks istio-agent uses) call CreateCertificate the way istio-agent does
// and judge the answer the way Go and the SPIFFE X509-SVID rules do. It is not part of meshcert;
// test/interop/go-client.test.ts builds it from Debian's Go packages (GOPATH mode, no network)
// and runs it against a real server.
//
// The request and response messages are described here from Istio's published contract
// (istio/api security/v1alpha1/ca.proto), not generated from meshcert's own proto/, so a wrong
// field number on our side cannot hide behind a client built from the same mistake.
//
// Output: one JSON object on stdout. Exit 0 when the call ended with the expected gRPC code and,
// for OK, every check on the chain passed; exit 1 otherwise, with the reason in "error".
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/ioutil"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding/gzip"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/structpb"
)

const method = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

var (
	oidSAN      = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 15}
)

type result struct {
	Code          string   `json:"code"`
	Message       string   `json:"message,omitempty"`
	Error         string   `json:"error,omitempty"`
	ALPN          string   `json:"alpn,omitempty"`
	TLSVersion    string   `json:"tlsVersion,omitempty"`
	ChainElements int      `json:"chainElements,omitempty"`
	LeafURIs      []string `json:"leafUris,omitempty"`
	LeafSerial    string   `json:"leafSerial,omitempty"`
	LifetimeSec   int64    `json:"lifetimeSeconds,omitempty"`
	Roots         int      `json:"roots,omitempty"`
	VerifiedPaths int      `json:"verifiedPaths,omitempty"`
	Health        string   `json:"health,omitempty"`
}

func main() {
	addr := flag.String("addr", "", "host:port of the CA")
	rootFile := flag.String("root", "", "PEM root the client trusts (istio-ca-root-cert)")
	serverName := flag.String("server-name", "localhost", "TLS server name (host part of CA_ADDR)")
	token := flag.String("token", "", "bearer token; empty sends no authorization header")
	cluster := flag.String("cluster", "Kubernetes", "clusterid header")
	keyKind := flag.String("key", "rsa2048", "rsa2048 | ec256 | ec384")
	subject := flag.String("subject", "o-empty", "o-empty (istio-agent: a single empty O) | empty (ztunnel)")
	id := flag.String("id", "", "SPIFFE ID put in the CSR and expected in the leaf")
	ttl := flag.Int64("ttl", 86400, "validity_duration in seconds")
	csrText := flag.String("csr-text", "", "send this text as the CSR instead of a generated one (error cases)")
	expect := flag.String("expect", "OK", "expected gRPC code name, e.g. OK, Unauthenticated, InvalidArgument")
	tls12 := flag.Bool("tls12", false, "offer TLS 1.2 only (older agents)")
	certFile := flag.String("cert", "", "client certificate chain (PEM) for mTLS authentication")
	keyFile := flag.String("key-file", "", "the client certificate's private key (PEM)")
	compress := flag.Bool("gzip", false, "send the request gzip-compressed (grpc-encoding: gzip)")
	padding := flag.Int("header-bytes", 0, "also send an x-padding header of this many bytes (header limits)")
	health := flag.Bool("health", false, "call grpc.health.v1.Health/Check (service \"\") instead")
	flag.Parse()

	r := &result{}
	err := run(r, *addr, *rootFile, *serverName, *token, *cluster, *keyKind, *subject, *id, *ttl, *csrText, *health, *compress, *tls12, *certFile, *keyFile, *padding)
	if err == nil && r.Code != *expect {
		err = fmt.Errorf("expected gRPC code %s, got %s (%q)", *expect, r.Code, r.Message)
	}
	if err != nil {
		r.Error = err.Error()
	}
	out, _ := json.Marshal(r)
	fmt.Println(string(out))
	if err != nil {
		os.Exit(1)
	}
}

func run(r *result, addr, rootFile, serverName, token, cluster, keyKind, subject, id string, ttl int64, csrText string, health, compress, tls12 bool, certFile, keyFile string, padding int) error {
	rootPEM, err := ioutil.ReadFile(rootFile)
	if err != nil {
		return err
	}
	trusted := x509.NewCertPool()
	if !trusted.AppendCertsFromPEM(rootPEM) {
		return errors.New("no certificate in the root file")
	}
	tlsConf := &tls.Config{RootCAs: trusted, ServerName: serverName, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	if tls12 {
		tlsConf.MaxVersion = tls.VersionTLS12
	}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		tlsConf.Certificates = []tls.Certificate{pair}
	}

	// grpc-go 1.33 does not enforce ALPN (recent releases do), so check it on a handshake of our own.
	conn, err := tls.Dial("tcp", addr, tlsConf)
	if err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	st := conn.ConnectionState()
	conn.Close()
	r.ALPN = st.NegotiatedProtocol
	r.TLSVersion = map[uint16]string{tls.VersionTLS12: "TLS1.2", tls.VersionTLS13: "TLS1.3"}[st.Version]
	if r.ALPN != "h2" {
		return fmt.Errorf("ALPN: server negotiated %q, grpc-go requires h2", r.ALPN)
	}

	if health {
		return checkHealth(r, addr, tlsConf)
	}

	var key crypto.Signer
	csrPEM := csrText
	if csrPEM == "" {
		key, err = newKey(keyKind)
		if err != nil {
			return err
		}
		if csrPEM, err = istioCSR(key, subject, id); err != nil {
			return err
		}
	}

	reqDesc, respDesc, err := messages()
	if err != nil {
		return err
	}
	req := dynamicpb.NewMessage(reqDesc)
	req.Set(reqDesc.Fields().ByName("csr"), protoreflect.ValueOfString(csrPEM))
	req.Set(reqDesc.Fields().ByName("validity_duration"), protoreflect.ValueOfInt64(ttl))
	md, _ := structpb.NewStruct(map[string]interface{}{"CertSigner": ""})
	req.Set(reqDesc.Fields().ByName("metadata"), protoreflect.ValueOfMessage(md.ProtoReflect()))
	resp := dynamicpb.NewMessage(respDesc)

	dialCtx, cancelDial := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancelDial()
	cc, err := grpc.DialContext(dialCtx, addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)), grpc.WithBlock(), grpc.WithDefaultCallOptions(grpc.ForceCodec(codec{})))
	if err != nil {
		return err
	}
	defer cc.Close()
	headers := []string{"clusterid", cluster}
	if token != "" {
		headers = append(headers, "authorization", "Bearer "+token)
	}
	if padding > 0 {
		headers = append(headers, "x-padding", strings.Repeat("a", padding))
	}
	// No deadline, as istio-agent sends none (the test bounds the process instead).
	ctx := metadata.AppendToOutgoingContext(context.Background(), headers...)
	var opts []grpc.CallOption
	if compress {
		opts = append(opts, grpc.UseCompressor(gzip.Name))
	}
	callErr := cc.Invoke(ctx, method, req, resp, opts...)
	s := status.Convert(callErr)
	r.Code = s.Code().String()
	r.Message = s.Message()
	if s.Code() != codes.OK {
		return nil
	}

	var chain []string
	list := resp.Get(respDesc.Fields().ByName("cert_chain")).List()
	for i := 0; i < list.Len(); i++ {
		chain = append(chain, list.Get(i).String())
	}
	return checkChain(r, chain, key, id, ttl, trusted)
}

// checkHealth calls the standard health service with grpc-go's generated client, as
// grpc_health_probe and load balancers do.
func checkHealth(r *result, addr string, tlsConf *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := grpc.DialContext(ctx, addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsConf)), grpc.WithBlock())
	if err != nil {
		return err
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	s := status.Convert(err)
	r.Code = s.Code().String()
	r.Message = s.Message()
	if err == nil {
		r.Health = resp.GetStatus().String()
	}
	return nil
}

// checkChain applies what istio-agent, ztunnel, Go's verifier and the X509-SVID rules require.
func checkChain(r *result, chain []string, key crypto.Signer, id string, ttl int64, trusted *x509.CertPool) error {
	r.ChainElements = len(chain)
	if len(chain) < 2 {
		return fmt.Errorf("cert_chain has %d elements; istio-agent needs at least 2", len(chain))
	}
	var parsed [][]*x509.Certificate
	for i, el := range chain {
		if !strings.HasSuffix(el, "\n") {
			return fmt.Errorf("cert_chain[%d] does not end with a newline", i)
		}
		certs, err := parsePEMCerts(el)
		if err != nil {
			return fmt.Errorf("cert_chain[%d]: %w", i, err)
		}
		if i < len(chain)-1 && len(certs) != 1 {
			return fmt.Errorf("cert_chain[%d] holds %d certificates; ztunnel needs exactly one", i, len(certs))
		}
		parsed = append(parsed, certs)
	}
	leaf := parsed[0][0]
	roots := parsed[len(parsed)-1]
	r.Roots = len(roots)
	rootPool := x509.NewCertPool()
	for _, c := range roots {
		if !c.IsCA || !bytes.Equal(c.RawIssuer, c.RawSubject) {
			return errors.New("the last cert_chain element holds a certificate that is not a self-issued CA")
		}
		rootPool.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, certs := range parsed[1 : len(parsed)-1] {
		inter.AddCert(certs[0])
	}
	// Leaf first, then each intermediate signed by the next element (the root bundle last).
	for i := 0; i+2 < len(parsed); i++ {
		if err := parsed[i][0].CheckSignatureFrom(parsed[i+1][0]); err != nil {
			return fmt.Errorf("cert_chain[%d] is not signed by cert_chain[%d]: %w", i, i+1, err)
		}
	}

	// X509-SVID signing certificates (every intermediate, and the roots): CA:true, a critical key
	// usage with keyCertSign, and (Appendix A) digitalSignature, keyEncipherment and keyAgreement
	// only on leaves.
	for i, certs := range parsed[1:] {
		for _, c := range certs {
			if !c.IsCA || !c.BasicConstraintsValid || !critical(c, oidKeyUsage) || c.KeyUsage&x509.KeyUsageCertSign == 0 {
				return fmt.Errorf("cert_chain[%d] (%s): a signing certificate needs CA:true and a critical key usage with keyCertSign", i+1, c.Subject)
			}
			if c.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment|x509.KeyUsageKeyAgreement) != 0 {
				return fmt.Errorf("cert_chain[%d] (%s): key usage %b sets a leaf-only bit (digitalSignature, keyEncipherment or keyAgreement)", i+1, c.Subject, c.KeyUsage)
			}
		}
	}

	// X509-SVID: exactly one SAN entry, the URI that is the SPIFFE ID.
	r.LeafSerial = leaf.SerialNumber.Text(16)
	for _, u := range leaf.URIs {
		r.LeafURIs = append(r.LeafURIs, u.String())
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != id {
		return fmt.Errorf("leaf URI SANs %v, want exactly [%s]", r.LeafURIs, id)
	}
	if n, err := sanEntries(leaf); err != nil || n != 1 {
		return fmt.Errorf("leaf SAN must hold exactly one name (the SPIFFE ID), holds %d (%v)", n, err)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		return errors.New("leaf must carry basicConstraints CA:false")
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return fmt.Errorf("leaf key usage %b: needs digitalSignature, never keyCertSign or cRLSign", leaf.KeyUsage)
	}
	if !critical(leaf, oidKeyUsage) {
		return errors.New("leaf key usage is missing or not critical")
	}
	// Go's verifier treats a leaf without EKU (or with anyExtendedKeyUsage) as good for anything,
	// so the EKU the workload needs is checked here: both serverAuth and clientAuth (mTLS).
	if !hasEKU(leaf, x509.ExtKeyUsageServerAuth) || !hasEKU(leaf, x509.ExtKeyUsageClientAuth) || hasEKU(leaf, x509.ExtKeyUsageAny) || len(leaf.UnknownExtKeyUsage) > 0 {
		return fmt.Errorf("leaf EKU %v (unknown %v): want serverAuth and clientAuth", leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage)
	}
	if len(leaf.Subject.Names) == 0 && !critical(leaf, oidSAN) {
		return errors.New("leaf subject is empty but its SAN is not critical")
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() > 159 {
		return errors.New("leaf serial must be positive and fit 20 octets of DER (RFC 5280)")
	}
	if key != nil {
		if pk, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(key.Public()) {
			return errors.New("leaf public key is not the CSR's key")
		}
	}
	now := time.Now()
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("leaf not valid now (%s .. %s)", leaf.NotBefore, leaf.NotAfter)
	}
	r.LifetimeSec = int64(leaf.NotAfter.Sub(now).Seconds())
	if ttl > 0 && r.LifetimeSec > ttl {
		return fmt.Errorf("leaf lives %ds from now, more than the %ds asked", r.LifetimeSec, ttl)
	}

	// Go's path building and verification, for both uses of a workload certificate, against the
	// roots the response carries and against the root the client was configured with. Along each
	// path: CAs allowed to sign certificates whose lifetime covers the leaf's (istiod never issues
	// past the signing chain's NotAfter; other roots in a rotation bundle may end sooner), and the
	// leaf's authorityKeyIdentifier names its issuer's key.
	for _, pool := range []*x509.CertPool{rootPool, trusted} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			paths, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: now})
			if err != nil {
				return fmt.Errorf("x509 verify: %w", err)
			}
			for _, path := range paths {
				for _, c := range path[1:] {
					if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
						return fmt.Errorf("chain certificate %q is not a CA with keyCertSign", c.Subject)
					}
					if leaf.NotAfter.After(c.NotAfter) {
						return fmt.Errorf("leaf outlives chain certificate %q", c.Subject)
					}
				}
				if len(leaf.AuthorityKeyId) == 0 || !bytes.Equal(leaf.AuthorityKeyId, path[1].SubjectKeyId) {
					return errors.New("leaf authorityKeyIdentifier does not name its issuer's subjectKeyIdentifier")
				}
			}
			r.VerifiedPaths += len(paths)
		}
	}
	return nil
}

// parsePEMCerts accepts only CERTIFICATE blocks separated by whitespace: no text before, between
// or after them.
func parsePEMCerts(text string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := bytes.TrimSpace([]byte(text))
	for len(rest) > 0 {
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, errors.New("text outside PEM blocks")
		}
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("malformed PEM block")
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			return nil, fmt.Errorf("PEM block %q with %d headers, want a plain CERTIFICATE", block.Type, len(block.Headers))
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
		rest = bytes.TrimSpace(rest)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

// sanEntries counts the GeneralNames in the SAN extension, of every type (Go's parsed fields
// skip otherName, directoryName and registeredID).
func sanEntries(c *x509.Certificate) (int, error) {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidSAN) {
			var names []asn1.RawValue
			rest, err := asn1.Unmarshal(e.Value, &names)
			if err != nil {
				return 0, err
			}
			if len(rest) != 0 {
				return 0, errors.New("trailing data after the SAN")
			}
			return len(names), nil
		}
	}
	return 0, errors.New("no SAN extension")
}

func hasEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == want {
			return true
		}
	}
	return false
}

func critical(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical
		}
	}
	return false
}

func newKey(kind string) (crypto.Signer, error) {
	switch kind {
	case "rsa2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "ec256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ec384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("unknown key kind %q", kind)
}

// istioCSR builds the CSR istio-agent sends (subject O= with an empty value, no CN) or ztunnel's
// (empty subject); both carry the SPIFFE ID as the one URI in a critical SAN extension.
func istioCSR(key crypto.Signer, subject, id string) (string, error) {
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(id)}})
	if err != nil {
		return "", err
	}
	tmpl := &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: oidSAN, Critical: true, Value: san}}}
	if subject == "o-empty" {
		tmpl.Subject = pkix.Name{Organization: []string{""}}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// messages describes IstioCertificateRequest {csr = 1; validity_duration = 3; metadata = 4
// (google.protobuf.Struct)} and IstioCertificateResponse {repeated cert_chain = 1}.
func messages() (protoreflect.MessageDescriptor, protoreflect.MessageDescriptor, error) {
	str := descriptorpb.FieldDescriptorProto_TYPE_STRING
	i64 := descriptorpb.FieldDescriptorProto_TYPE_INT64
	msg := descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	rep := descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	field := func(name string, n int32, t descriptorpb.FieldDescriptorProto_Type, l descriptorpb.FieldDescriptorProto_Label, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Type: t.Enum(), Label: l.Enum()}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	fd := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("istio-ca-interop.proto"),
		Package:    proto.String("istio.v1.auth"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/struct.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("IstioCertificateRequest"), Field: []*descriptorpb.FieldDescriptorProto{
				field("csr", 1, str, opt, ""),
				field("validity_duration", 3, i64, opt, ""),
				field("metadata", 4, msg, opt, ".google.protobuf.Struct"),
			}},
			{Name: proto.String("IstioCertificateResponse"), Field: []*descriptorpb.FieldDescriptorProto{
				field("cert_chain", 1, str, rep, ""),
			}},
		},
	}
	file, err := protodesc.NewFile(fd, protoregistry.GlobalFiles)
	if err != nil {
		return nil, nil, err
	}
	return file.Messages().ByName("IstioCertificateRequest"), file.Messages().ByName("IstioCertificateResponse"), nil
}

// codec marshals with the protobuf v2 API. Debian's grpc-go 1.33 codec expects v1 generated
// messages; recent grpc-go does exactly this.
type codec struct{}

func (codec) Marshal(v interface{}) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }
func (codec) Unmarshal(data []byte, v interface{}) error {
	return proto.Unmarshal(data, v.(proto.Message))
}
func (codec) Name() string { return "proto" }
