// Package doccheck finds the command lines the docs print for a program
// (fenced shell blocks, inline code, cobra examples) and checks each one
// against the program's cobra command tree: the subcommand exists, every
// flag is one it has, and it takes that many arguments. Tests of labctl
// and labd use it so that what the docs tell a reader to type runs as
// printed.
package doccheck
