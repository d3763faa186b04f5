// Package verify is berth's trust policy: it decides whether an image digest
// may run, from cosign signatures, and says exactly why.
//
// The policy file (/etc/berth/policy.json, see POLICY.md) follows
// containers-policy.json(5), so a Podman user reads it without a new manual:
// scopes per registry, repository namespace or repository, the most specific
// scope wins, and every requirement in the chosen list must accept the image.
// An absent file, or one without "default", rejects every image.
//
// The flow is the same at pull time and before every (re)start:
//
//	sigs, _ := verify.FetchSignatures(ctx, repo, digest, remoteOpts...) // at pull, before any layer
//	j := policy.Evaluate(ctx, repo, digest, sigs)                       // pure given the set
//	store(sigs, j)                                                       // SignatureSet is plain JSON
//	…
//	j = policy.Evaluate(ctx, repo, digest, storedSigs)                  // at restart, offline
//
// so a policy change takes effect at the next start, and a restart needs no
// registry. Verification is cosign's own (cosign.VerifyImageSignature) with
// cosign.SimpleClaimVerifier, which binds a signature to the digest it was
// made for; berth adds the containers-policy signedIdentity check that binds
// it to the repository, because cosign's verifier does not (sigstore's
// payload.Cosign documents that consumers must).
//
// Keyless (Fulcio) signatures are verified fully offline from trust roots
// named in the policy: the certificate must chain to the given Fulcio CA and
// carry the expected identity and OIDC issuer, its embedded SCT must verify
// with the given CT log key (cosign's default; a rule may opt out explicitly
// with insecureIgnoreSCT), and the signature must carry a Rekor bundle whose
// signed entry timestamp verifies with the given Rekor key; the
// certificate's validity is checked at the bundle's integrated time.
package verify
