// Package metrics tests what Custos processes export on /metrics: the names SREs alert and
// build dashboards on (docs/metrics.md), scraped from a real worker process and from the
// scheduler's parts, and the names the files under deploy/ use.
package metrics

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape is the metric families of one scrape, by Prometheus name.
type Scrape map[string]*dto.MetricFamily

// Get scrapes url (http://host:port/metrics) in the Prometheus text format.
func Get(url string) (Scrape, error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return Scrape(fams), nil
}

// Merge adds the families of o that s lacks.
func (s Scrape) Merge(o Scrape) {
	for k, v := range o {
		if _, ok := s[k]; !ok {
			s[k] = v
		}
	}
}

// Sum is the sum of the family's values (a histogram counts its observations), over the series
// whose labels include every pair of match; ok is false when the family is absent.
func (s Scrape) Sum(name string, match map[string]string) (sum float64, ok bool) {
	f, ok := s[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if !labelsMatch(m, match) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			sum += m.GetUntyped().GetValue()
		}
	}
	return sum, true
}

// Labels returns the label names used by the family's series.
func (s Scrape) Labels(name string) map[string]bool {
	out := map[string]bool{}
	for _, m := range s[name].GetMetric() {
		for _, l := range m.GetLabel() {
			out[l.GetName()] = true
		}
	}
	return out
}

func labelsMatch(m *dto.Metric, match map[string]string) bool {
	for k, v := range match {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Has reports whether the scrape holds the series name as a query would write it: a family's
// name, or a histogram's name_bucket, name_sum or name_count.
func (s Scrape) Has(name string) bool {
	if _, ok := s[name]; ok {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if f, ok := s[base]; ok && f.GetType() == dto.MetricType_HISTOGRAM {
				return true
			}
		}
	}
	return false
}

var custosName = regexp.MustCompile(`\bcustos_[a-zA-Z0-9_]*[a-zA-Z0-9]`)

// Names returns every custos_* metric name written in text (a PromQL expression, a rules or
// dashboard file).
func Names(text string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range custosName.FindAllString(text, -1) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
