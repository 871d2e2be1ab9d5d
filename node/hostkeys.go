package node

import (
	"cmp"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lab-fleet/lab/proto"
)

// DefaultSSHHostKeys is where sshd keeps the host public keys (NixOS's
// services.openssh.hostKeys, and every distribution's default).
const DefaultSSHHostKeys = "/etc/ssh/ssh_host_*_key.pub"

// hostKeys reads the SSH host public keys that glob matches, for the
// status: "<type> <base64>" without comment, ed25519 first, each once,
// at most proto.MaxHostKeys. A file that cannot be read or holds no
// valid key is skipped (logged at debug): no keys is no error, it is a
// machine without sshd, or one whose sshd has not made its keys yet
// (they are read again for every status).
func (d *Daemon) hostKeys() []string {
	if d.cfg.SSHHostKeys == "off" {
		return nil
	}
	files, _ := filepath.Glob(d.cfg.SSHHostKeys) // the pattern was validated
	var keys []string
	for _, f := range files {
		b, err := readHead(f, 16<<10)
		if err != nil {
			d.log.Debug("status: SSH host key not read", "file", f, "err", err)
			continue
		}
		k, ok := parseHostKey(string(b))
		if !ok {
			d.log.Debug("status: not an SSH host public key", "file", f)
			continue
		}
		keys = append(keys, k)
	}
	rank := func(k string) int {
		if i := slices.Index(proto.HostKeyTypes, proto.HostKeyType(k)); i >= 0 {
			return i
		}
		return len(proto.HostKeyTypes)
	}
	slices.SortStableFunc(keys, func(a, b string) int { return cmp.Compare(rank(a), rank(b)) })
	keys = slices.Compact(keys)
	return keys[:min(len(keys), proto.MaxHostKeys)]
}

// readHead reads at most n bytes of a file (a .pub file is one line).
func readHead(name string, n int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// parseHostKey takes the first line of a .pub file, "<type> <base64>
// [comment]", and returns it without the comment if it is a valid key.
func parseHostKey(s string) (string, bool) {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	f := strings.Fields(line)
	if len(f) < 2 {
		return "", false
	}
	k := f[0] + " " + f[1]
	return k, proto.ValidHostKey(k) == nil
}
