package main

// The metrics Custos exports (Prometheus names, docs/operations.md) and the labels each carries.
// Rules and dashboard panels may only use these: a misspelt name would make an alert that can
// never fire or a panel that stays empty, and nothing else would notice.
var knownMetrics = map[string][]string{
	"custos_consumer_pending":                    {"consumer"},
	"custos_consumer_ack_pending":                {"consumer"},
	"custos_events_acked_total":                  {"type", "class"},
	"custos_events_redelivered_total":            {"type", "class"},
	"custos_events_dead_lettered_total":          {"type"},
	"custos_publish_to_durable_duration_seconds": {"class"},
	"custos_pack_commit_duration_seconds":        {"class"},
	"custos_target_bytes_total":                  {"target", "kind", "operation"},
	"custos_target_operations_total":             {"target", "kind", "operation"},
	"custos_target_errors_total":                 {"target", "kind", "operation", "error_type"},
	"custos_replicas_missing":                    {"class"},
	"custos_repair_queue_depth":                  {},
	"custos_rpo_age_seconds":                     {"class"},
	"custos_rpo_breached":                        {"class"},
	"custos_scheduler_fired_total":               {"class", "schedule"},
	"custos_scheduler_skipped_total":             {},
	"custos_alerts_total":                        {"kind", "severity"},
	"custos_dead_letters":                        {},
	"custos_drill_runs_total":                    {"class", "target", "outcome"},
	"custos_drill_estimated_seconds":             {"class", "target"},
	"custos_drill_last_passed":                   {"class", "target"},
}

// histograms are exported as NAME_bucket (with le), NAME_sum and NAME_count.
var histograms = map[string]bool{
	"custos_publish_to_durable_duration_seconds": true,
	"custos_pack_commit_duration_seconds":        true,
}

// scrapeLabels are added by Prometheus and the prometheus-operator to every series.
var scrapeLabels = []string{"job", "instance", "namespace", "pod", "service", "container", "endpoint"}

// requiredAlerts must be in the rule file (issue 11, item 3), each with a runbook.
var requiredAlerts = []string{
	"CustosBackupFailing", "CustosRPOBreach", "CustosReplicaMissing", "CustosDeadLetters",
	"CustosDrillFailed", "CustosSuspiciousActivity", "CustosConsumerLag",
}

// metricLabels returns the labels a series of name may carry, and whether the name is known.
func metricLabels(name string) (map[string]bool, bool) {
	base, le := name, false
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := cutSuffix(name, suffix); ok && histograms[b] {
			base, le = b, suffix == "_bucket"
			break
		}
	}
	if histograms[name] { // the bare histogram name is not a series
		return nil, false
	}
	ls, ok := knownMetrics[base]
	if !ok {
		return nil, false
	}
	out := map[string]bool{"__name__": true}
	for _, l := range ls {
		out[l] = true
	}
	for _, l := range scrapeLabels {
		out[l] = true
	}
	if le {
		out["le"] = true
	}
	return out, true
}

func cutSuffix(s, suffix string) (string, bool) {
	if len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix {
		return s[:len(s)-len(suffix)], true
	}
	return s, false
}
