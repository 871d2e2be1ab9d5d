// Package configkeys finds the keys of a config file that no setting
// reads and says each one with the file it is in and the known key it most
// likely meant ("brokr" → did you mean "broker"?). labd and labctl both
// refuse a file with such a key instead of ignoring a setting the operator
// believes is in force.
package configkeys
