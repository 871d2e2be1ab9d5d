// Package access decides who may connect to the embedded broker and what
// each identity may publish and subscribe to (DESIGN §9): default deny,
// roles node / controller / viewer, per-node credentials stored as bcrypt
// hashes in an identities file, client id bound to the username. The rules
// are a pure function of the identity and the topic, tested as a table; the
// mochi hook only asks them.
package access
