package catalog

import "time"

// SetRequestTimeout shortens how long Commit waits for one broker reply.
func (ix *Index) SetRequestTimeout(d time.Duration) { ix.requestTimeout = d }
