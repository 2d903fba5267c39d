package instance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Client is the operator's side of the instance API.
type Client struct {
	HTTP *http.Client
}

// Status fetches the Report of the instance at base (http://host:port).
func (c Client) Status(ctx context.Context, base string) (Report, error) {
	var r Report
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+StatusPath, nil)
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

// Desire sends d to the instance at base with the cluster's token.
func (c Client) Desire(ctx context.Context, base, token string, d Desired) error {
	body, err := json.Marshal(d)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+DesiredPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("telling %s its desired state: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("telling %s its desired state: %s: %s", base, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}
