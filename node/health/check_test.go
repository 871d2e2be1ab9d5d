package health

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	bad := []struct {
		c    Check
		want string
	}{
		{Check{Type: TypeTCP, Address: "a:1"}, `check "": name: `},
		{Check{Name: "x"}, `check "x": type: `},
		{Check{Name: "x", Type: "ping"}, `check "x": type: `},
		{Check{Name: "web", Type: TypeHTTP, URL: "localhost:80/health"}, `check "web": url: `},
		{Check{Name: "web", Type: TypeHTTP, URL: "ftp://h/x"}, `check "web": url: `},
		{Check{Name: "web", Type: TypeHTTP, URL: "http://h/", ExpectStatus: 42}, `check "web": expect_status: `},
		{Check{Name: "db", Type: TypeTCP, Address: "localhost"}, `check "db": address: `},
		{Check{Name: "db", Type: TypeTCP, Address: ":5432"}, `check "db": address: `},
		{Check{Name: "c", Type: TypeCommand}, `check "c": command: `},
		{Check{Name: "c", Type: TypeCommand, Command: []string{""}}, `check "c": command: `},
		{Check{Name: "c", Type: TypeCommand, Command: []string{"true"}, Timeout: -time.Second}, `check "c": timeout: `},
		{Check{Name: "c", Type: TypeCommand, Command: []string{"true"}, Grace: -time.Second}, `check "c": grace: `},
	}
	for _, tc := range bad {
		err := tc.c.Validate()
		if !errors.Is(err, ErrInvalidCheck) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want prefix %q", tc.c, err, tc.want)
		}
	}

	c := Check{Name: "web", Type: TypeHTTP, URL: "http://127.0.0.1:8080/health"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.ExpectStatus != 200 || c.Timeout != 10*time.Second || c.Interval != 2*time.Second || c.Retries != 2 || c.Grace != 0 || c.attempts() != 3 {
		t.Errorf("defaults: %+v", c)
	}
	none := Check{Name: "once", Type: TypeSystemd, Retries: -5}
	if err := none.Validate(); err != nil || none.attempts() != 1 {
		t.Errorf("Retries -5: %v, %d attempts", err, none.attempts())
	}
	if err := none.Validate(); err != nil || none.attempts() != 1 {
		t.Errorf("Validate is not idempotent: %d attempts", none.attempts())
	}

	dup := []Check{{Name: "a", Type: TypeSystemd}, {Name: "a", Type: TypeSystemd}}
	if err := ValidateAll(dup); !errors.Is(err, ErrInvalidCheck) || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("ValidateAll(duplicates) = %v", err)
	}
}
