package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/lab-fleet/lab/broker/access"
	"github.com/lab-fleet/lab/internal/bus"
)

// benchAuth is the -auth mode: every node logs in with an identity of its
// own (a generated token, as labctl node add writes), and labctl, the
// watchers and the controller service as the controller identity "bench";
// mosquitto gets the passwd and ACL that labctl acl export writes.
type benchAuth struct {
	dir        string // NAME.password files, one per identity
	identities string // the identities file
	password   []byte // the controller identity's
}

// authUser is the controller identity of labctl, the watchers (client ids
// bench-*) and the controller service.
const authUser = "bench"

// auth is nil without -auth.
var auth *benchAuth

// setupAuth writes the identities of n nodes (in group bench, and in
// their capacity block's group with block > 0) and of the controller, and
// their password files, under dir.
func setupAuth(dir string, n, block int) (*benchAuth, error) {
	a := &benchAuth{dir: filepath.Join(dir, "passwords"), identities: filepath.Join(dir, "identities.yaml")}
	if err := os.MkdirAll(a.dir, 0o700); err != nil {
		return nil, err
	}
	var f access.File
	add := func(id access.Identity) ([]byte, error) {
		raw := make([]byte, 24)
		if _, err := rand.Read(raw); err != nil {
			return nil, err
		}
		token := []byte(base64.RawURLEncoding.EncodeToString(raw))
		h, err := access.HashToken(token)
		if err != nil {
			return nil, err
		}
		id.PasswordHash = h
		f.Put(id)
		return token, os.WriteFile(filepath.Join(a.dir, id.Name+".password"), append(token, '\n'), 0o600)
	}
	for i := range n {
		groups := []string{"bench"}
		if block > 0 {
			groups = append(groups, blockGroup(i/block))
		}
		if _, err := add(access.Identity{Name: nodeName(i), Role: access.RoleNode, Groups: groups}); err != nil {
			return nil, err
		}
	}
	var err error
	if a.password, err = add(access.Identity{Name: authUser, Role: access.RoleController}); err != nil {
		return nil, err
	}
	return a, access.Save(a.identities, f)
}

// passwordFile is an identity's password file.
func (a *benchAuth) passwordFile(name string) string { return filepath.Join(a.dir, name+".password") }

// login sets the controller identity's credentials on c (nothing without
// -auth).
func login(c bus.Config) bus.Config {
	if auth != nil {
		c.Username, c.Password = authUser, auth.password
	}
	return c
}

// labctlEnv is the environment that makes labctl log in (nil without
// -auth).
func labctlEnv() []string {
	if auth == nil {
		return nil
	}
	return []string{"LAB_USERNAME=" + authUser, "LAB_PASSWORD_FILE=" + auth.passwordFile(authUser)}
}

// mosquittoConf exports the identities for mosquitto into data and returns
// the configuration lines that use them.
func (a *benchAuth) mosquittoConf(labctl, data string) (string, error) {
	out := filepath.Join(data, "acl-export")
	if b, err := exec.Command(labctl, "acl", "export", "--format", "mosquitto", "--identities", a.identities, "--passwords", a.dir, "--out", out).CombinedOutput(); err != nil {
		return "", fmt.Errorf("labctl acl export: %v\n%s", err, b)
	}
	return fmt.Sprintf("allow_anonymous false\npassword_file %s\nacl_file %s\n", filepath.Join(out, "passwd"), filepath.Join(out, "acl")), nil
}
