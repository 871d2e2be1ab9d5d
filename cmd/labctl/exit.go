package main

import "errors"

// Exit codes of labctl. `labctl publish` adds its own outcome codes
// (see controller.ExitCode); these are the ones every command shares.
const (
	exitOK    = 0
	exitError = 1 // the command could not do its job (I/O, broker, Nix)
	exitUsage = 2 // bad flags, arguments or configuration
)

// usageError marks an error in how the command was called (exit code 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// exitCode maps an error returned by a command to the process exit code. An
// error can choose its code by implementing ExitCode() int.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var coded interface{ ExitCode() int }
	if errors.As(err, &coded) {
		return coded.ExitCode()
	}
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	return exitError
}

// exitErr carries an explicit exit code.
type exitErr struct {
	code int
	err  error
}

func (e exitErr) Error() string { return e.err.Error() }
func (e exitErr) Unwrap() error { return e.err }
func (e exitErr) ExitCode() int { return e.code }
