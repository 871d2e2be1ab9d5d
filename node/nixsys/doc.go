// Package nixsys performs the Nix operations of a node, behind the System
// interface so that the node's state machine can be tested with a fake
// (package nixsystest).
//
// A node never evaluates Nix. It only does, in effect:
//
//	nix-store --realise <toplevel>                      (Realise)
//	nix-env -p <profile> --set <toplevel>               (SetProfile)
//	<toplevel>/bin/switch-to-configuration <action>     (StartActivation)
//
// and reads the profile's generations from the <profile>-N-link symlinks.
//
// # Detached activation
//
// switch-to-configuration may restart labd itself (its unit changed), and
// labd may crash or be SIGKILLed in the middle of a switch. So the switch
// runs in a helper process that does not die with labd: labd re-executes its
// own binary (os.Executable) with LAB_ACTIVATE_HELPER=1; the program's main
// calls MaybeRunHelper first, which turns that process into the helper. The
// helper runs the switch, waits, and writes <runDir>/activation.result
// atomically. A later labd process calls ResumeActivation(runDir) and waits
// for that file.
//
// The helper is started in one of two ways (Config.Detach):
//
//   - "setsid": a new session and process group (SysProcAttr.Setsid), so
//     signals to labd's process group and labd's death do not reach it.
//   - "systemd-run": a transient unit (systemd-run --collect
//     --service-type=exec --unit lab-activate-<random>). Under systemd a
//     setsid child is still in labd's cgroup and is killed when systemd
//     stops or restarts labd.service — which switch-to-configuration does
//     when labd's unit changed. nixos-rebuild runs switch-to-configuration
//     through systemd-run for the same reason.
//
// os.Executable resolves to labd's own store path, so the helper is the
// binary that started it even when the switch replaces labd's package.
//
// "auto" (the default) picks systemd-run when labd runs under systemd
// (INVOCATION_ID is set and systemd-run is on $PATH), else setsid.
//
// Files in runDir: activation.json (what was started: id, toplevel, action,
// helper pid or unit, written before the helper starts), activation.log
// (output of the helper and of switch-to-configuration; the previous one is
// kept as activation.log.1) and activation.result (JSON: id, exit_code,
// started, finished, toplevel, action).
package nixsys
