package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	dispenserv1 "github.com/dispenserhq/dispenser/proto/dispenser/v1"

	"github.com/dispenserhq/dispenser/internal/cli"
)

func stderrIsTerminal() bool { return term.IsTerminal(2) }

var jsonOpts = protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}

// show prints m as JSON with --json, else through human.
func show[M proto.Message](a *app, m M, human func(io.Writer, M)) error {
	if a.asJSON {
		return a.printJSON(m)
	}
	human(a.stdout, m)
	return nil
}

// printJSON writes one message as JSON, for scripts.
func (a *app) printJSON(m proto.Message) error {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(a.stdout, string(b))
	return err
}

func fmtTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().Local().Format(time.RFC3339)
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func printPool(w io.Writer, p *dispenserv1.Pool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	state := "active"
	if p.GetPaused() {
		state = "paused"
	}
	fmt.Fprintf(tw, "pool\t%s\n", p.GetId())
	fmt.Fprintf(tw, "name\t%s\n", p.GetDisplayName())
	fmt.Fprintf(tw, "state\t%s\n", state)
	fmt.Fprintf(tw, "claim window\t%s .. %s\n", fmtTime(p.GetClaimStartsAt()), fmtTime(p.GetClaimEndsAt()))
	fmt.Fprintf(tw, "per-user limit\t%d\n", p.GetPerUserLimit())
	fmt.Fprintf(tw, "holds\t%s by default, at most %s, %d open per user\n",
		p.GetHoldDefault().AsDuration(), p.GetHoldMax().AsDuration(), p.GetHoldsPerUser())
	fmt.Fprintf(tw, "refill\tbelow %s, %s at a time\n", cli.FormatInt(int64(p.GetRefillLowWater())), cli.FormatInt(int64(p.GetRefillBatchSize())))
	if n := p.GetRedisShards(); n > 1 {
		fmt.Fprintf(tw, "redis shards\t%d (each refilled below %s, %s at a time)\n", n,
			cli.FormatInt(int64(ceilDiv(p.GetRefillLowWater(), n))), cli.FormatInt(int64(ceilDiv(p.GetRefillBatchSize(), n))))
	}
	hook := p.GetWebhookUrl()
	if hook == "" {
		hook = "-"
	} else if p.GetWebhookSecretSet() {
		hook += " (signed)"
	}
	fmt.Fprintf(tw, "webhook\t%s\n", hook)
	fmt.Fprintf(tw, "created\t%s\n", fmtTime(p.GetCreateTime()))
	fmt.Fprintf(tw, "updated\t%s\n", fmtTime(p.GetUpdateTime()))
	_ = tw.Flush()
}

func printPoolList(w io.Writer, pools []*dispenserv1.Pool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tLIMIT\tWINDOW\tNAME")
	for _, p := range pools {
		state := "active"
		if p.GetPaused() {
			state = "paused"
		}
		window := "always"
		if p.GetClaimStartsAt() != nil || p.GetClaimEndsAt() != nil {
			window = fmtTime(p.GetClaimStartsAt()) + " .. " + fmtTime(p.GetClaimEndsAt())
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", p.GetId(), state, p.GetPerUserLimit(), window, p.GetDisplayName())
	}
	_ = tw.Flush()
}

func printStats(w io.Writer, s *dispenserv1.PoolStats) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, n int64) { fmt.Fprintf(tw, "%s\t%s\t\n", name, cli.FormatInt(n)) }
	fmt.Fprintf(w, "pool %s at %s\n", s.GetPoolId(), fmtTime(s.GetReadTime()))
	row("imported", s.GetImported())
	row("available", s.GetAvailable())
	row("staged", s.GetStaged())
	row("held", s.GetHeld())
	row("claimed", s.GetClaimed())
	row("void", s.GetVoid())
	row("claimants", s.GetClaimants())
	row("imports", s.GetImports())
	if s.GetHoldsDue() > 0 {
		row("holds due to expire", s.GetHoldsDue())
	}
	if s.RedisStaged != nil {
		row("redis staged", s.GetRedisStaged())
		row("redis in flight", s.GetRedisInFlight())
	}
	_ = tw.Flush()
	if s.GetRedisError() != "" {
		fmt.Fprintf(w, "redis: %s\n", s.GetRedisError())
	}
	if s.GetBalanced() {
		fmt.Fprintln(w, "balanced: imported = available + staged + held + claimed + void")
	} else {
		fmt.Fprintln(w, "NOT BALANCED: imported != available + staged + held + claimed + void; run reconcile and investigate")
	}
	pz := s.GetPrizes()
	fmt.Fprintf(w, "prizes: %d pending, %d ready, %d assigned, %d delivered, %d failed, %d cancelled\n",
		pz.GetPending(), pz.GetReady(), pz.GetAssigned(), pz.GetDelivered(), pz.GetFailed(), pz.GetCancelled())
}

// ceilDiv is n over k, rounded up.
func ceilDiv(n, k int32) int32 { return (n + k - 1) / k }
