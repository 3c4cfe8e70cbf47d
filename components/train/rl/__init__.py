"""RL after SFT: PPO and GRPO on Ray actors, cut into layers after OpenRLHF's.

Each module imports only modules above it in this list (no cycles, none inside functions or under
``TYPE_CHECKING`` either), so a module can be read, tested and replaced with what is above it:

    config       every knob: where the roles run, rollouts, the update, alarms; PPO's and GRPO's fields
    batch        the data that crosses role boundaries: Rollout, Scores, Experience, training stats
    formulas     the maths as plain functions of tensors: masked statistics, KL, GAE, advantages, losses
    prompts      RL prompt records rendered for generation, and the seeded stream over them
    checkpoints  step directories in the artifact store, complete once their state.json exists
    monitor      per-iteration health metrics, the four alarms, sample tables and curves
    roles        policy, critic and reference as plain classes (what runs inside an actor)
    rewards      reward functions (verifiers, registered, module:function) and the scorer role
    placement    where the roles run (colocate, separate, inline) and how the driver calls them
    algorithm    what an algorithm gives the driver (`RLAlgorithm`) and gets from it
    driver       `RLRun`: setup, resume, iterations, evaluation, output

The stages themselves, with the PPO and GRPO algorithms, are `components.train.ppo` and
`components.train.grpo`. This package's ``__init__`` imports nothing, so importing one layer never
pulls in the others.
"""
