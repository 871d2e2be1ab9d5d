// Package archtest holds no code, only tests of the repository's shape: the
// dependency rules between lab's packages (cmd → internal/render →
// controller; cmd → controller / node / broker → proto) and a package doc
// comment on every package.
package archtest
