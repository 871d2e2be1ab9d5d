package pki

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
)

func TestCAIssuesVerifiableCertificates(t *testing.T) {
	dir := t.TempDir()
	if err := Init(dir, "test CA", 1); err != nil {
		t.Fatal(err)
	}
	if err := Init(dir, "again", 1); err == nil {
		t.Fatal("Init overwrote an existing CA")
	}
	if err := Issue(dir, "broker", []string{"127.0.0.1", "lab.example.net"}, 30); err != nil {
		t.Fatal(err)
	}
	if err := Issue(dir, "n1", nil, 30); err != nil {
		t.Fatal(err)
	}
	srv, err := ServerConfig(filepath.Join(dir, "broker.crt"), filepath.Join(dir, "broker.key"), filepath.Join(dir, CACert))
	if err != nil {
		t.Fatal(err)
	}
	if srv.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Errorf("client auth %v", srv.ClientAuth)
	}
	cl, err := ClientConfig(filepath.Join(dir, CACert), filepath.Join(dir, "n1.crt"), filepath.Join(dir, "n1.key"))
	if err != nil {
		t.Fatal(err)
	}
	if CommonName(cl) != "n1" {
		t.Errorf("CN %q", CommonName(cl))
	}
	leaf, _ := x509.ParseCertificate(srv.Certificates[0].Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: cl.RootCAs, DNSName: "lab.example.net"}); err != nil {
		t.Errorf("broker certificate does not verify: %v", err)
	}
	client, _ := x509.ParseCertificate(cl.Certificates[0].Certificate[0])
	if _, err := client.Verify(x509.VerifyOptions{Roots: srv.ClientCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate does not verify: %v", err)
	}
	other := t.TempDir()
	_ = Init(other, "other", 1)
	if _, err := client.Verify(x509.VerifyOptions{Roots: mustPool(t, filepath.Join(other, CACert)), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("verified against another CA")
	}
	if Issue(t.TempDir(), "x", nil, 1) == nil {
		t.Error("issued without a CA")
	}
}

func mustPool(t *testing.T, f string) *x509.CertPool {
	p, err := pool(f)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
