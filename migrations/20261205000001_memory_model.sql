-- The memory model gained the MoE shapes (expert LoRA's size, one layer's experts) so a job's estimate
-- can follow precision, packed experts and activation checkpointing. Record them for the built-in
-- model, which has no directory to inspect (checked by a unit test in gpu-runner/src/model/inspect.rs).
UPDATE models SET inspect = jsonb_set(inspect, '{memory_model}', '{"total_params": 1148544, "router_params": 1024, "expert_params": 786432, "vocab_size": 1024, "hidden_size": 128, "num_hidden_layers": 2, "q_dim": 128, "kv_dim": 64, "activation_elements_per_token": 7176, "activation_elements_per_token_per_seq": 0, "moe_layers": 2, "num_experts": 4, "expert_intermediate_size": 256}') WHERE id = 'moetune/tiny-mixtral';
