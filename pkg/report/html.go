package report

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
	"sync"
	"time"
)

//go:embed report.html.tmpl
var htmlText string

// htmlTemplate is parsed on first use so that binaries linking this package do not pay for it
// at start.
var htmlTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("report").Funcs(template.FuncMap{
		"stamp": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"upper": strings.ToUpper,
		"label": func(status string) string {
			switch status {
			case StatusPass:
				return "PASS"
			case StatusFail:
				return "FAIL"
			}
			return "N/A"
		},
		"cite": func(ss []Source) string {
			var out []string
			for _, s := range ss {
				out = append(out, "seed "+s.Seed+" §"+s.Section)
			}
			return strings.Join(out, ", ")
		},
	}).Parse(htmlText))
})

// WriteHTML writes the report as one self-contained HTML page: inline CSS, no script, no
// external resource, so it can be archived and opened offline. A failing control's row has
// class "fail" and says FAIL.
func (r *Report) WriteHTML(w io.Writer) error {
	if err := htmlTemplate().Execute(w, r); err != nil {
		return fmt.Errorf("report: html: %w", err)
	}
	return nil
}
