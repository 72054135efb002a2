"""Training: the orchestration of the fits, the denoiser's loop, and the checkpoints a run resumes from."""
