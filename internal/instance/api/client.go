package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Client is a caller's side of the instance API. HTTP must present a
// client certificate the instance accepts (see ClientTLS).
type Client struct {
	HTTP *http.Client
}

// URL is the base URL of the instance API at a pod's address.
func URL(podIP string) string {
	return "https://" + net.JoinHostPort(podIP, strconv.Itoa(APIPort))
}

// Status fetches the Report of the instance at base (URL), once it
// differs from w.After if w asks to wait.
func (c Client) Status(ctx context.Context, base string, w Wait) (Report, error) {
	var r Report
	u := base + StatusPath
	if w.For > 0 {
		u += "?" + url.Values{StatusAfterParam: {strconv.FormatInt(w.After, 10)},
			StatusWaitParam: {strconv.FormatInt(w.For.Milliseconds(), 10)}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return r, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return r, fmt.Errorf("asking %s for its status: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return r, fmt.Errorf("asking %s for its status: %s", base, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, fmt.Errorf("decoding the status of %s: %w", base, err)
	}
	return r, nil
}

// Desire sends d to the instance at base.
func (c Client) Desire(ctx context.Context, base string, d Desired) error {
	body, err := json.Marshal(d)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+DesiredPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("telling %s its desired state: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		err := fmt.Errorf("telling %s its desired state: %s: %s", base, resp.Status, strings.TrimSpace(string(msg)))
		if resp.StatusCode == http.StatusLocked {
			err = fmt.Errorf("%w: %w", ErrPromiseHolds, err)
		}
		return err
	}
	return nil
}

// ErrPromiseHolds: the replica refused a promotion because it promised
// the primary to accept none for a while; the order may be sent again.
var ErrPromiseHolds = errors.New("the replica's failsafe promise holds")

// Promise asks the replica at base for a promise; nil when it gave it.
func (c Client) Promise(ctx context.Context, base string, r PromiseRequest) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return c.call(ctx, http.MethodPost, base+PromisePath, bytes.NewReader(body), http.StatusOK, nil)
}

// ErrUnknownBackup is the instance's answer for a backup it has no record
// of: it restarted since it was asked.
var ErrUnknownBackup = errors.New("the instance has no record of the backup")

// StartBackup sends o to the instance at base; asking again for the same ID
// returns the backup's state.
func (c Client) StartBackup(ctx context.Context, base string, o BackupOrder) (BackupReport, error) {
	var r BackupReport
	body, err := json.Marshal(o)
	if err != nil {
		return r, err
	}
	err = c.call(ctx, http.MethodPost, base+BackupsPath, bytes.NewReader(body), http.StatusAccepted, &r)
	return r, err
}

// BackupState asks the instance at base what became of backup id.
func (c Client) BackupState(ctx context.Context, base, id string) (BackupReport, error) {
	var r BackupReport
	err := c.call(ctx, http.MethodGet, base+BackupsPath+"/"+url.PathEscape(id), nil, http.StatusOK, &r)
	return r, err
}

// CancelBackup stops backup id on the instance at base.
func (c Client) CancelBackup(ctx context.Context, base, id string) error {
	return c.call(ctx, http.MethodDelete, base+BackupsPath+"/"+url.PathEscape(id), nil, http.StatusAccepted, nil)
}

// call makes one request and decodes the answer into out.
func (c Client) call(ctx context.Context, method, u string, body io.Reader, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return ErrUnknownBackup
	}
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(msg)))
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decoding the answer of %s %s: %w", method, u, err)
	}
	return nil
}
