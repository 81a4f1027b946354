package stock

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/dispenserhq/dispenser/internal/testenv"
)

// BenchmarkClaimScript runs the claim script for fresh users (a flash
// sale's claims) of a pool of limit 1 and of 3, with as many requests in one
// run as the Pipe groups under load (about 10) and fewer or more, and
// reports what Redis spent per claim: its CPU (INFO cpu, so run it on a
// Redis nothing else uses meanwhile) and the script's own time (INFO
// commandstats).
//
//	go test ./internal/stock -run '^$' -bench ClaimScript -benchtime 100000x -count 3
func BenchmarkClaimScript(b *testing.B) {
	for _, per := range []int{1, 10, 30} {
		for _, limit := range []int{1, 3} {
			b.Run(fmt.Sprintf("requests=%d/limit=%d", per, limit), func(b *testing.B) { benchClaimScript(b, per, limit) })
		}
	}
}

func benchClaimScript(b *testing.B, per, limit int) {
	ctx := context.Background()
	rdb, ns := testenv.Redis(b)
	s := New(rdb, NewKeys(ns))
	const chunk = 10_000
	for start := 0; start < b.N; start += chunk {
		entries := make([]string, min(chunk, b.N-start))
		for i := range entries {
			entries[i] = FormatEntry(int64(start + i + 1))
		}
		require.NoError(b, s.Push(ctx, "p1", int64(start/chunk+1), entries))
	}
	cpu0, script0 := redisCPU(b, rdb)
	b.ResetTimer()
	for i := 0; i < b.N; i += per {
		batch := make([]*scriptCall, 0, per)
		for j := i; j < min(i+per, b.N); j++ {
			batch = append(batch, s.call(ClaimArgs{PoolID: "p1", RequestID: "r" + strconv.Itoa(j),
				UserID: "u" + strconv.Itoa(j), Limit: limit, TTL: time.Hour}))
		}
		sc := scripts(batch, time.Now())[0]
		vals, err := claimScript.Run(ctx, rdb, sc.keys, sc.args...).StringSlice()
		if err != nil || vals[0] != "popped" {
			b.Fatalf("claim script: %v %v", vals, err)
		}
	}
	b.StopTimer()
	cpu1, script1 := redisCPU(b, rdb)
	b.ReportMetric((cpu1-cpu0)*1e6/float64(b.N), "redis-µs/claim")
	b.ReportMetric((script1-script0)/float64(b.N), "script-µs/claim")
}

// redisCPU is Redis's CPU time so far in seconds, and the microseconds its
// scripts (EVAL and EVALSHA) took.
func redisCPU(b *testing.B, rdb *redis.Client) (cpu, scriptUsec float64) {
	info, err := rdb.Info(context.Background(), "cpu", "commandstats").Result()
	require.NoError(b, err)
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		key, val, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch key {
		case "used_cpu_user", "used_cpu_sys":
			v, err := strconv.ParseFloat(val, 64)
			require.NoError(b, err)
			cpu += v
		case "cmdstat_evalsha", "cmdstat_eval":
			for f := range strings.SplitSeq(val, ",") {
				if u, ok := strings.CutPrefix(f, "usec="); ok {
					v, err := strconv.ParseFloat(u, 64)
					require.NoError(b, err)
					scriptUsec += v
				}
			}
		}
	}
	return cpu, scriptUsec
}
