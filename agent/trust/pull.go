package trust

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/berth-dev/berth/image"
	"github.com/berth-dev/berth/verify"
)

// Pulled is an image fetched from a registry and the policy's judgement.
type Pulled struct {
	Image     *image.Image
	Resolved  *image.Resolved
	Judgement verify.Judgement
}

// Pull resolves ref, fetches the signatures of the resolved digest from the
// endpoint that answered (a mirror or the origin), and judges them against
// the policy at policyPath BEFORE any layer is fetched; a rejection aborts
// the pull with the policy's reason. An accepted image is pulled by digest
// and stored with its signatures and judgement, so that every later start
// can be judged again offline.
func Pull(ctx context.Context, st *image.Store, regs *image.Registries, policyPath, ref string, progress func(image.Progress)) (*Pulled, error) {
	policy, err := verify.Load(policyPath)
	if err != nil {
		return nil, err
	}
	var sigs *verify.SignatureSet
	var judgement verify.Judgement
	img, res, err := st.Pull(ctx, regs, ref, image.PullOptions{
		Progress: progress,
		Verify: func(ctx context.Context, r image.Resolved) error {
			// Signatures live beside the image, under the same repository
			// path, on whichever endpoint served it; the policy and the
			// signature claims name the origin repository.
			at, err := regs.Rebase(r.Repo, r.Endpoint)
			if err != nil {
				return err
			}
			sigs, err = verify.FetchSignatures(ctx, at, r.Digest, r.Endpoint.Options...)
			if err != nil {
				return fmt.Errorf("signatures of %s@%s: %w", r.Repo, r.Digest, err)
			}
			judgement = policy.Evaluate(ctx, r.Repo, r.Digest, sigs)
			return judgement.Error()
		},
	})
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(sigs)
	if err != nil {
		return nil, err
	}
	if err := st.PutMeta(img.Digest, signaturesMeta(res.Repo.Name()), b); err != nil {
		return nil, fmt.Errorf("store signatures: %w", err)
	}
	if err := recordJudgement(st, img.Digest, judgementMeta(res.Repo.Name()), judgement); err != nil {
		return nil, err
	}
	return &Pulled{Image: img, Resolved: res, Judgement: judgement}, nil
}
