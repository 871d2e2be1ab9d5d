package controller

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// The verbs of the controller service's request/response API (DESIGN
// §11): a request is published on <p>/ctl/req/<verb> with an MQTT v5
// Response Topic and Correlation Data; the answer goes to that topic with
// the same Correlation Data.
const (
	VerbSubmit = "submit" // Request.Submission → Response.Rollout
	VerbList   = "list"   // → Response.Records (newest first, without per-node results)
	VerbShow   = "show"   // Request.Rollout → Response.Record
	VerbCancel = "cancel" // Request.Rollout → Response.Record
	VerbResume = "resume" // Request.Rollout (a paused, pending or interrupted one) → Response.Record
	VerbPause  = "pause"  // Request.Rollout → Response.Record: no further wave opens until resume
	VerbInfo   = "info"   // → Response.Info
	VerbReboot = "reboot" // Request.Reboot → Response.Job (an ordered reboot the service runs)
	VerbJob    = "job"    // Request.Rollout (a reboot job's id) → Response.Job
	VerbForget = "forget" // Request.Node (offline, in no running rollout) → ok: its retained status, presence and desired state cleared
)

// Verbs lists every verb the service answers.
var Verbs = []string{VerbSubmit, VerbList, VerbShow, VerbCancel, VerbResume, VerbPause, VerbInfo, VerbReboot, VerbJob, VerbForget}

// APIVersion is the version of Request and Response; a service refuses a
// request of a newer major version with a reason.
const APIVersion = 1

// Request is the body of a request to the controller service.
type Request struct {
	V          int         `json:"v"`
	From       string      `json:"from,omitempty"` // who asks (labctl's client id); the broker's identity wins where known
	Rollout    string      `json:"rollout,omitempty"`
	Submission *Submission `json:"submission,omitempty"`
	Reboot     *RebootJob  `json:"reboot,omitempty"`
	Node       string      `json:"node,omitempty"` // forget: the machine
	// A submission larger than one MQTT packet (brokers such as EMQX
	// accept 1 MiB by default) goes in parts: the encoded Submission
	// (EncodeSubmission) cut into Chunks, Part 0 … Parts-1 of one
	// Upload id, sent in order on the submit verb. Every part but the
	// last is answered ok at once; the last is answered as a whole
	// submission is.
	Upload string `json:"upload,omitempty"`
	Part   int    `json:"part,omitempty"`
	Parts  int    `json:"parts,omitempty"`
	Chunk  []byte `json:"chunk,omitempty"`
}

// EncodeSubmission encodes a submission for an upload in parts.
func EncodeSubmission(s *Submission) ([]byte, error) { return encode(s) }

// SplitRequests returns the submit requests that carry s: one when it
// fits in about limit bytes, else an upload in parts of that size.
func SplitRequests(s *Submission, limit int) ([]*Request, error) {
	b, err := EncodeSubmission(s)
	if err != nil {
		return nil, err
	}
	if len(b) <= limit {
		return []*Request{{Submission: s}}, nil
	}
	if len(b) > MaxRequestSize {
		return nil, fmt.Errorf("the submission is %d bytes, more than the %d a controller accepts", len(b), MaxRequestSize)
	}
	parts := (len(b) + limit - 1) / limit
	id := s.Plan.ID
	out := make([]*Request, 0, parts)
	for i := range parts {
		out = append(out, &Request{Rollout: id, Upload: id, Part: i, Parts: parts, Chunk: b[i*limit : min(len(b), (i+1)*limit)]})
	}
	return out, nil
}

// Codes say what kind of answer a Response is.
const (
	CodeOK         = "ok"
	CodeRefused    = "refused"     // the request is understood and refused: Error says why
	CodeNotFound   = "not-found"   // no such rollout
	CodeBadRequest = "bad-request" // malformed, unknown verb, newer version
	CodeInternal   = "internal"    // the service failed (store, broker): try again
)

// Response is the body of the service's answer.
type Response struct {
	V       int        `json:"v"`
	Code    string     `json:"code"`
	Error   string     `json:"error,omitempty"` // the reason, for every code but ok
	Rollout string     `json:"rollout,omitempty"`
	Record  *Record    `json:"record,omitempty"`
	Records []*Record  `json:"records,omitempty"`
	Info    *Info      `json:"info,omitempty"`
	Job     *JobRecord `json:"job,omitempty"`
}

// Info describes the controller service.
type Info struct {
	Name        string   `json:"name"`         // its client id / name in envelopes
	Key         string   `json:"key"`          // the public key that signs its gates and commands (labd's controller_keys)
	TrustedKeys []string `json:"trusted_keys"` // operator key ids it accepts Desired states from (none: any)
	Running     []string `json:"running"`      // rollouts it drives now
	TimeZone    string   `json:"time_zone"`
}

// MaxRequestSize bounds a request body (a submission of many thousand
// signed Desired states is the largest).
const MaxRequestSize = 64 << 20

// ErrBadRequest wraps every reason a request body cannot be read.
var ErrBadRequest = errors.New("bad request")

// EncodeRequest encodes a request (msgpack, the Request's json field names).
func EncodeRequest(r *Request) ([]byte, error) {
	r.V = APIVersion
	return encode(r)
}

// DecodeRequest decodes a request body, refusing one that is too large,
// malformed, or of a newer version.
func DecodeRequest(b []byte) (*Request, error) {
	if len(b) > MaxRequestSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadRequest, len(b), MaxRequestSize)
	}
	r := new(Request)
	if err := decode(b, r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if r.V > APIVersion || r.V < 1 {
		return nil, fmt.Errorf("%w: version %d: this controller speaks version %d (upgrade the controller, or use labctl of its version)", ErrBadRequest, r.V, APIVersion)
	}
	return r, nil
}

// EncodeResponse encodes a response.
func EncodeResponse(r *Response) ([]byte, error) {
	r.V = APIVersion
	return encode(r)
}

// DecodeResponse decodes a response body.
func DecodeResponse(b []byte) (*Response, error) {
	if len(b) > MaxRequestSize {
		return nil, fmt.Errorf("%w: response of %d bytes", ErrBadRequest, len(b))
	}
	r := new(Response)
	if err := decode(b, r); err != nil {
		return nil, fmt.Errorf("response: %w", err)
	}
	if r.Code == "" {
		return nil, errors.New("response: no code")
	}
	return r, nil
}

func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("json")
	enc.SetOmitEmpty(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func decode(b []byte, v any) error {
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	dec.SetCustomStructTag("json")
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.PeekCode(); err == nil {
		return errors.New("trailing bytes after the message")
	}
	return nil
}
