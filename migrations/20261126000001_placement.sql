-- Placement by requirement. `requirements` is what a job needs from a runner (device kind and the
-- estimated peak training memory, from the model's recorded `inspect` for the job's method, batch and
-- sequence length); `status_details` says why a queued job waits (no registered runner fits it);
-- `queued_at` is when it last entered the queue (placement latency is measured from it).
ALTER TABLE jobs ADD COLUMN requirements jsonb NOT NULL DEFAULT '{"device": "auto", "memory_bytes": 0}';
ALTER TABLE jobs ADD COLUMN status_details text;
ALTER TABLE jobs ADD COLUMN queued_at timestamptz;

-- The built-in model has no directory to inspect: record what `moetune-runner inspect` reports for its
-- config (checked by a unit test in gpu-runner/src/model/inspect.rs).
UPDATE models SET inspect = '{"architecture": "MixtralForCausalLM", "hidden_size": 128, "expert_intermediate_size": 256, "memory_model": {"total_params": 1148544, "router_params": 1024, "expert_params": 786432, "vocab_size": 1024, "hidden_size": 128, "num_hidden_layers": 2, "q_dim": 128, "kv_dim": 64, "activation_elements_per_token": 7176, "activation_elements_per_token_per_seq": 0}}' WHERE id = 'moetune/tiny-mixtral';
