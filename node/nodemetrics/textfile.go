package nodemetrics

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// FileName is the file labd writes in node_exporter's textfile directory.
const FileName = "labd.prom"

// WriteTextfile gathers g and replaces path with it in the Prometheus
// text format, atomically: a temporary file in the same directory (its
// name does not end in .prom, so node_exporter never reads it), fsync,
// mode 0644, rename, fsync of the directory. A reader sees the old file
// or the new one, never a part; a failure leaves the old one and no
// temporary file. (prometheus.WriteToTextfile does the same without the
// fsyncs, so a crash could leave an empty file.)
func WriteTextfile(path string, g prometheus.Gatherer) error {
	mfs, err := g.Gather()
	if err != nil {
		return fmt.Errorf("gather metrics: %w", err)
	}
	var buf bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&buf, mf); err != nil {
			return fmt.Errorf("encode metrics: %w", err)
		}
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write metrics %s: temporary file: %w", path, stable(err))
	}
	defer os.Remove(tmp.Name())
	step := "write"
	if _, err = tmp.Write(buf.Bytes()); err == nil {
		step, err = "chmod", tmp.Chmod(0o644)
	}
	if err == nil {
		step, err = "fsync", tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		step, err = "close", cerr
	}
	if err == nil {
		step, err = "rename", os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write metrics %s: %s: %w", path, step, stable(err))
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// stable drops the temporary file's random name from err, so that the
// same failure has the same message each time (labd logs each distinct
// one once); errors.Is still sees the cause.
func stable(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return pe.Err
	case errors.As(err, &le):
		return le.Err
	}
	return err
}
