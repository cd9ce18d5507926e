package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/taskhub/taskhub"
	"github.com/taskhub/taskhub/samples"
)

func demoCommand() *cobra.Command {
	var (
		hellos, fanouts, fanoutSize, pipelines, approvals, transfers int
		timeout                                                      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a mixed workload of the samples on the hub and print a summary",
		Long: `demo starts a worker on the hub (by default ./taskhub.db), schedules a mix of the
sample orchestrations — HelloSequence, FanOutFanIn, ImagePipeline, Approval
(half approved by an event, half left to time out) and BankTransfer between
four Account entities inside critical sections — waits for all of them, checks
their outputs and that the transfers kept the total balance, and prints
instances completed, wall time and throughput.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			be, err := openBackend(cmd)
			if err != nil {
				return err
			}
			defer be.Close()
			reg := taskhub.NewRegistry()
			if err := samples.Register(reg); err != nil {
				return err
			}
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			w, err := taskhub.NewWorker(be, reg, taskhub.WorkerOptions{Logger: quiet})
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if err := w.Start(ctx); err != nil {
				return err
			}
			defer func() {
				stopCtx, c := context.WithTimeout(context.Background(), 10*time.Second)
				defer c()
				_ = w.Stop(stopCtx)
			}()
			d := &demo{client: w.Client(), out: cmd.OutOrStdout()}
			return d.run(ctx, hellos, fanouts, fanoutSize, pipelines, approvals, transfers)
		},
	}
	f := cmd.Flags()
	f.IntVar(&hellos, "hello", 200, "HelloSequence instances")
	f.IntVar(&fanouts, "fanout", 10, "FanOutFanIn instances")
	f.IntVar(&fanoutSize, "fanout-size", 100, "activities per FanOutFanIn")
	f.IntVar(&pipelines, "pipelines", 20, "ImagePipeline instances (4 sub-orchestrations of 4 activities each)")
	f.IntVar(&approvals, "approvals", 20, "Approval instances (half approved, half timing out after 1s)")
	f.IntVar(&transfers, "transfers", 20, "BankTransfer instances between 4 Account entities")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	return cmd
}

type demo struct {
	client *taskhub.Client
	out    io.Writer
	done   atomic.Int64
	total  int
}

type expectation struct {
	id    string
	check func(*taskhub.InstanceStatus) error
}

// demoAccounts and demoDeposit are the accounts of the BankTransfer part and
// the balance each starts with.
const (
	demoAccounts = 4
	demoDeposit  = 100
)

func (d *demo) run(ctx context.Context, hellos, fanouts, fanoutSize, pipelines, approvals, transfers int) error {
	start := time.Now()
	// Accounts are new on every run, so a reused hub file starts clean.
	accounts := make([]taskhub.EntityID, demoAccounts)
	for i := range accounts {
		accounts[i] = taskhub.NewEntityID(samples.AccountName, fmt.Sprintf("demo-%d-%d", start.UnixNano(), i))
		if err := d.client.SignalEntity(ctx, accounts[i], "Deposit", demoDeposit); err != nil {
			return fmt.Errorf("open account %s: %w", accounts[i], err)
		}
	}
	var exps []expectation
	schedule := func(name string, input any, check func(*taskhub.InstanceStatus) error) error {
		id, err := d.client.ScheduleNewOrchestration(ctx, name, input)
		if err != nil {
			return fmt.Errorf("schedule %s: %w", name, err)
		}
		exps = append(exps, expectation{id, check})
		return nil
	}
	outputIs := func(want string) func(*taskhub.InstanceStatus) error {
		return func(s *taskhub.InstanceStatus) error {
			if got := string(s.Output); got != want {
				return fmt.Errorf("output %s, want %s", got, want)
			}
			return nil
		}
	}
	var errs []error
	for range hellos {
		errs = append(errs, schedule(samples.HelloSequenceName, nil, outputIs(`["Hello Tokyo!","Hello Seattle!","Hello London!"]`)))
	}
	for range fanouts {
		errs = append(errs, schedule(samples.FanOutFanInName, fanoutSize, outputIs(fmt.Sprint(fanoutSize))))
	}
	for range pipelines {
		errs = append(errs, schedule(samples.ImagePipelineName, nil, outputIs(`["image-0:step4","image-1:step4","image-2:step4","image-3:step4"]`)))
	}
	approvalIDs := make([]string, 0, approvals)
	for i := range approvals {
		want := `"timed out"`
		if i%2 == 0 {
			want = `"approved"`
		}
		errs = append(errs, schedule(samples.ApprovalName, samples.ApprovalInput{TimeoutSeconds: 1}, outputIs(want)))
		approvalIDs = append(approvalIDs, exps[len(exps)-1].id)
	}
	for i := range transfers {
		in := samples.TransferInput{From: accounts[i%demoAccounts].Key, To: accounts[(i+1)%demoAccounts].Key, Amount: 10 + 7*i%60}
		errs = append(errs, schedule(samples.BankTransferName, in, func(*taskhub.InstanceStatus) error { return nil }))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i, id := range approvalIDs {
		if i%2 == 0 {
			if err := d.client.RaiseEvent(ctx, id, "Approval", samples.ApprovalEvent{Approved: true}); err != nil {
				return fmt.Errorf("raise Approval to %s: %w", id, err)
			}
		}
	}
	d.total = len(exps)
	fmt.Fprintf(d.out, "scheduled %d instances: %d HelloSequence, %d FanOutFanIn(%d), %d ImagePipeline, %d Approval, %d BankTransfer\n",
		d.total, hellos, fanouts, fanoutSize, pipelines, approvals, transfers)

	progressDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-progressDone:
				return
			case <-t.C:
				fmt.Fprintf(d.out, "  %d/%d completed after %s\n", d.done.Load(), d.total, time.Since(start).Round(time.Millisecond))
			}
		}
	}()
	failures := make([]error, len(exps))
	var waiters sync.WaitGroup
	for i, e := range exps {
		waiters.Add(1)
		go func() {
			defer waiters.Done()
			s, err := d.client.WaitForInstanceCompletion(ctx, e.id)
			if err != nil {
				failures[i] = err
				return
			}
			d.done.Add(1)
			if s.RuntimeStatus != taskhub.StatusCompleted {
				failures[i] = fmt.Errorf("instance %s (%s) ended %s: %v", e.id, s.Name, s.RuntimeStatus, s.Failure)
				return
			}
			if err := e.check(s); err != nil {
				failures[i] = fmt.Errorf("instance %s (%s): %w", e.id, s.Name, err)
			}
		}()
	}
	waiters.Wait()
	close(progressDone)
	wg.Wait()
	wall := time.Since(start)
	activities := hellos*3 + fanouts*fanoutSize + pipelines*16
	fmt.Fprintf(d.out, "\nsummary\n  instances completed  %d/%d (plus %d sub-orchestrations)\n  activities run       %d\n  wall time            %s\n  throughput           %.0f instances/s, %.0f activities/s\n",
		d.done.Load(), d.total, pipelines*4, activities, wall.Round(time.Millisecond),
		float64(d.total)/wall.Seconds(), float64(activities)/wall.Seconds())
	if err := errors.Join(failures...); err != nil {
		return fmt.Errorf("demo failed: %w", err)
	}
	return d.checkAccounts(ctx, accounts)
}

// checkAccounts waits until no account is locked and checks that the
// transfers kept the total balance.
func (d *demo) checkAccounts(ctx context.Context, accounts []taskhub.EntityID) error {
	for {
		total, locked := 0, false
		var balances []int
		for _, id := range accounts {
			m, err := d.client.GetEntity(ctx, id, true)
			if err != nil {
				return fmt.Errorf("account %s: %w", id, err)
			}
			var a samples.Account
			if err := m.ReadState(&a); err != nil {
				return fmt.Errorf("account %s: %w", id, err)
			}
			total += a.Balance
			balances = append(balances, a.Balance)
			locked = locked || m.LockedBy != "" || m.BacklogQueueSize > 0
		}
		if !locked {
			if want := demoAccounts * demoDeposit; total != want {
				return fmt.Errorf("demo failed: the accounts hold %d in total (%v), want %d", total, balances, want)
			}
			fmt.Fprintf(d.out, "  accounts             %v (total %d, as deposited)\n", balances, total)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("accounts still locked: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
