// Package render turns the controller's values into what people and
// scripts read: the end of a rollout as a table by wave with its summary
// line (WriteResult), the fleet as a status table (StatusRows,
// WriteStatus), and indented JSON (WriteJSON). It is shared by labctl and
// the demo, and is where a dashboard's text comes from.
//
// It depends on controller's types, never the other way round (a test in
// internal/archtest keeps it so); it has no loop and keeps no state.
package render
