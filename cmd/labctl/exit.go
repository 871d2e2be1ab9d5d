package main

import (
	"errors"
	"strings"

	"github.com/spf13/cobra"
)

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
	if errors.As(err, &u) || isCobraUsage(err) {
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

// markUsageErrors makes cobra's own errors about flags, arguments and
// unknown commands usage errors (exit 2), on cmd and every subcommand.
func markUsageErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error {
			if err := args(c, a); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		markUsageErrors(sub)
	}
}

// isCobraUsage recognises the errors cobra returns before any of our code
// runs (an unknown subcommand of the root).
func isCobraUsage(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}
