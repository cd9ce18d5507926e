// Package samples holds the sample orchestrations and activities that the
// taskhub binary registers (demo, worker, serve) and the tests run:
//
//   - HelloSequence calls SayHello for Tokyo, Seattle and London in sequence.
//   - FanOutFanIn runs N SayHello calls in parallel and returns the count.
//   - Approval waits for the "Approval" event with a timeout.
//   - ImagePipeline is the shape of seed 000: a parent starting 4
//     sub-orchestrations (ImageProcess) that each chain 4 activities.
//   - Counter and Account are durable entities, and BankTransfer moves money
//     between two Accounts inside a critical section (entities.go).
package samples

import (
	"errors"
	"fmt"
	"time"

	"github.com/taskhub/taskhub"
)

// Names of the registered functions.
const (
	HelloSequenceName = "HelloSequence"
	FanOutFanInName   = "FanOutFanIn"
	ApprovalName      = "Approval"
	ImagePipelineName = "ImagePipeline"
	ImageProcessName  = "ImageProcess"
	SayHelloName      = "SayHello"
	ImageStepName     = "ImageStep"
)

// Register adds every sample to r.
func Register(r *taskhub.Registry) error {
	return errors.Join(
		taskhub.RegisterOrchestrator(r, HelloSequenceName, HelloSequence),
		taskhub.RegisterOrchestrator(r, FanOutFanInName, FanOutFanIn),
		taskhub.RegisterOrchestrator(r, ApprovalName, Approval),
		taskhub.RegisterOrchestrator(r, ImagePipelineName, ImagePipeline),
		taskhub.RegisterOrchestrator(r, ImageProcessName, ImageProcess),
		taskhub.RegisterActivity(r, SayHelloName, SayHello),
		taskhub.RegisterActivity(r, ImageStepName, ImageStep),
		RegisterEntities(r),
	)
}

// SayHello greets a city.
func SayHello(_ taskhub.ActivityContext, city string) (string, error) {
	return "Hello " + city + "!", nil
}

// HelloSequence calls SayHello three times in sequence and returns the
// greetings.
func HelloSequence(ctx *taskhub.OrchestrationContext, _ any) ([]string, error) {
	var out []string
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		s, err := taskhub.Await[string](ctx.CallActivity(SayHelloName, city))
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// FanOutFanIn runs n SayHello calls in parallel and returns how many
// completed.
func FanOutFanIn(ctx *taskhub.OrchestrationContext, n int) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("fan-out size %d is negative", n)
	}
	tasks := make([]taskhub.Task, n)
	for i := range tasks {
		tasks[i] = ctx.CallActivity(SayHelloName, fmt.Sprintf("city-%d", i))
	}
	if err := ctx.WhenAll(tasks...).Await(nil); err != nil {
		return 0, err
	}
	return n, nil
}

// ApprovalInput configures Approval.
type ApprovalInput struct {
	// TimeoutSeconds is how long to wait for the decision.
	TimeoutSeconds float64 `json:"timeoutSeconds"`
}

// ApprovalEvent is the payload of the "Approval" event.
type ApprovalEvent struct {
	Approved bool `json:"approved"`
}

// Approval waits for the "Approval" event and returns "approved",
// "rejected" or "timed out".
func Approval(ctx *taskhub.OrchestrationContext, in ApprovalInput) (string, error) {
	timeout := time.Duration(in.TimeoutSeconds * float64(time.Second))
	if timeout <= 0 {
		timeout = time.Hour
	}
	ev, err := taskhub.Await[ApprovalEvent](ctx.WaitForExternalEvent("Approval", timeout))
	switch {
	case errors.Is(err, taskhub.ErrEventTimeout):
		return "timed out", nil
	case err != nil:
		return "", err
	case ev.Approved:
		return "approved", nil
	default:
		return "rejected", nil
	}
}

// ImageStepInput is one step of an image's processing.
type ImageStepInput struct {
	Image string `json:"image"`
	Step  int    `json:"step"`
}

// ImageStep is a no-op image transformation step.
func ImageStep(_ taskhub.ActivityContext, in ImageStepInput) (string, error) {
	return fmt.Sprintf("%s:step%d", in.Image, in.Step), nil
}

// ImageProcess chains 4 ImageStep activities for one image.
func ImageProcess(ctx *taskhub.OrchestrationContext, image string) (string, error) {
	last := image
	for step := 1; step <= 4; step++ {
		var err error
		if last, err = taskhub.Await[string](ctx.CallActivity(ImageStepName, ImageStepInput{Image: image, Step: step})); err != nil {
			return "", err
		}
	}
	return last, nil
}

// ImagePipeline starts 4 ImageProcess sub-orchestrations in parallel and
// returns their results.
func ImagePipeline(ctx *taskhub.OrchestrationContext, _ any) ([]string, error) {
	tasks := make([]taskhub.Task, 4)
	for i := range tasks {
		tasks[i] = ctx.CallSubOrchestrator(ImageProcessName, fmt.Sprintf("image-%d", i))
	}
	out := make([]string, len(tasks))
	for i, t := range tasks {
		if err := t.Await(&out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
