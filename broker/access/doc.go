// Package access decides who may connect to the embedded broker and what
// each identity may publish and subscribe to (DESIGN §9): default deny,
// roles node / controller / viewer, credentials in an identities file as
// SHA-256 digests of generated tokens (checked in constant time, fast: a
// 192-bit secret cannot be guessed) or bcrypt hashes of passwords people
// chose, client id bound to the username. A Limiter (broker/guard) may
// refuse a banned login before its password is checked and holds back the
// answer to a failed one. The rules
// are a pure function of the identity and the topic, tested as a table; the
// mochi hook only asks them.
package access
