// Package node is labd, the daemon on every machine: it holds an outbound
// MQTT connection, reconciles the retained desired state against what it
// has applied, and drives one execution at a time through the states of
// DESIGN §6 — fetching (nix-store --realise), activating (record the
// previous system, move the profile, run switch-to-configuration detached),
// verifying (local health checks, broker reachable again) and succeeded, or
// rolling back to the recorded previous system when anything after the
// profile moved fails. What could keep the switch from starting is checked
// before the profile moves; such an execution only fails.
//
// The operator's deploy hooks (package hook, from the local configuration
// only) run as steps of these states: pre_activate while activating, before
// the profile moves (failing: failed, nothing was changed), post_activate
// while verifying, before the checks (failing: rolled back), and the
// rollback hooks around the rollback, which never stop it.
//
// The transition function next (machine.go) is pure and table-tested: it
// takes the state and one event and returns the new state and the effects to
// perform. One goroutine, Daemon.loop (daemon.go), owns the state: MQTT
// callbacks, Nix and health-check completions and timers only send it
// events. Every transition is persisted (write, fsync, rename) before its
// effects run, so a crash resumes or rolls back and never stays half-done;
// a detached activation that finished while labd was down is picked up from
// its result file (package nixsys), never run twice.
//
// With a textfile directory configured, one more goroutine,
// Daemon.textfile (textfile.go), writes labd.prom for node_exporter
// (package nodemetrics): when the status changes, the connection drops
// and every interval. It only reads — the status snapshot taken under the
// daemon's mutex and the counters the loop and intake increment — and
// nobody waits for it.
//
// Secrets (secrets.go, secretkeeper.go; docs/secrets.md) have their own
// goroutine, secretKeeper.run: intake verifies each message on the node's
// secret topics and hands it over; the pure planSecret decides (write,
// remove, keep or reject: replayed, expired, outside secrets.dir); run
// decrypts with the machine's age identity, writes the file atomically,
// restarts the named units and persists the versions. The status reports
// each secret's state, never its content. The rollout machine only hears
// which secrets are present (evSecrets, sent by run): an execution whose
// new system declares secrets (etc/lab/secrets.json, secrets_needed.go)
// waits for them, still fetching, before it activates.
//
// Any malformed, oversize, invalid, unsigned-when-keys-are-pinned, forged,
// expired or replayed message is reported as a "rejected" event and changes
// nothing else; so is a Desired signed by a key pinned for gates and
// commands only (trust.go: operator keys sign what runs, controller keys
// when and reboots). Reboot commands are acknowledged (intake.go, report.go):
// an event naming the command says accepted, refused or failed.
package node
