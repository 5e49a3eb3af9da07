package azure

import (
	"context"
	"net/http"
)

// SetListPageSize lowers the List page size so tests exercise paging.
func SetListPageSize(t *Target, n int32) { t.pageSize = n }

// NewWithHTTPClient is New with every request sent through hc.
func NewWithHTTPClient(ctx context.Context, cfg Config, hc *http.Client) (*Target, error) {
	return newTarget(ctx, cfg, hc)
}
