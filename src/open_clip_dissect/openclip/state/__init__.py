"""What a run saves and resumes: the selection state files and OpenCLIP's checkpoints."""
