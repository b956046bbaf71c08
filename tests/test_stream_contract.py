"""The stream contract (docs/streams.md), the same checks for every family's tiny preset:
one step on dummy inputs; save/load of a state mid-stream; batch isolation; reset."""

import pytest
import torch

import longvid
from longvid.registry import list_models, list_recipes

TINY = ["memvit_tiny", "malmm_tiny", "rewind_tiny"]


def outputs(out) -> list[torch.Tensor]:
    """The tensors of a step's output, in a fixed order (a tensor or a dict of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [out[k] for k in sorted(out) if isinstance(out[k], torch.Tensor)]


def run(model, inputs_list, state):
    """Step ``model`` through ``inputs_list``; every step's output tensors and the last state."""
    results = []
    with torch.no_grad():
        for inputs in inputs_list:
            out, state = model(inputs, state)
            results.append(outputs(out))
    return results, state


def take(inputs, index: list[int]):
    """Rows ``index`` of one step's inputs (a tensor, or a value with ``index_select``)."""
    if isinstance(inputs, torch.Tensor):
        return inputs[index]
    return inputs.index_select(torch.tensor(index))


def join(parts):
    """One step's inputs from the rows of several (a tensor, or a value with ``cat``)."""
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return type(parts[0]).cat(parts)


@pytest.fixture(params=TINY)
def preset(request):
    torch.manual_seed(0)
    return request.param, longvid.build_model(request.param).eval()


def test_every_tiny_preset_is_listed():
    found = {info.name: info for info in list_models()}
    assert set(TINY) <= set(found) and all(found[name].description for name in TINY)


def test_one_step_on_dummy_inputs(preset):
    _, model = preset
    with torch.no_grad():
        out, state = model(model.dummy_inputs(2), model.init_state(2))
    assert outputs(out) and all(t.shape[0] == 2 and torch.isfinite(t.float()).all() for t in outputs(out))
    assert state.batch_size == 2 and state.nbytes > 0


def test_a_saved_state_continues_bitwise_in_a_new_model(preset, tmp_path):
    name, model = preset
    inputs = [model.dummy_inputs(2, seed=s) for s in range(4)]
    uninterrupted, _ = run(model, inputs, model.init_state(2))
    _, state = run(model, inputs[:2], model.init_state(2))
    longvid.save_state(state, tmp_path / "state.safetensors")
    fresh = longvid.build_model(name).eval()
    fresh.load_state_dict(model.state_dict())
    continued, _ = run(fresh, inputs[2:], longvid.load_state(tmp_path / "state.safetensors"))
    for a, b in zip(uninterrupted[2:], continued):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_a_stream_is_isolated_from_its_neighbours(preset):
    _, model = preset
    middle = [model.dummy_inputs(1, seed=s) for s in range(3)]  # what stream 1 watches
    batches = [
        [join([model.dummy_inputs(1, seed=10 * k + s), middle[s], model.dummy_inputs(1, seed=10 * k + 5 + s)]) for s in range(3)]
        for k in (1, 2)  # two different pairs of neighbours
    ]
    first, _ = run(model, batches[0], model.init_state(3))
    second, _ = run(model, batches[1], model.init_state(3))
    alone, _ = run(model, middle, model.init_state(1))
    for a, b, single in zip(first, second, alone):
        assert all(torch.equal(x[1], y[1]) for x, y in zip(a, b))  # bitwise, whatever the neighbours watch
        assert all(torch.allclose(x[1], s[0], atol=1e-5, rtol=1e-4) for x, s in zip(a, single))


def test_reset_makes_a_slot_a_fresh_stream(preset):
    _, model = preset
    inputs = [model.dummy_inputs(2, seed=s) for s in range(3)]
    _, state = run(model, inputs[:2], model.init_state(2))
    after_reset, _ = run(model, inputs[2:], state.reset(torch.tensor([True, False])))
    fresh, _ = run(model, [take(inputs[2], [0])], model.init_state(1))
    kept, _ = run(model, inputs, model.init_state(2))
    assert all(torch.allclose(x[0], y[0], atol=1e-5, rtol=1e-4) for x, y in zip(after_reset[0], fresh[0]))
    assert all(torch.equal(x[1], y[1]) for x, y in zip(after_reset[0], kept[2]))


def test_models_command_lists_every_preset(run_cli):
    code, printed = run_cli("models")
    assert code == 0, printed
    models, recipes = printed.split("\n\n")
    assert [line.split()[0] for line in models.splitlines()] == [info.name for info in list_models()]
    rows = [line.split()[:3] for line in recipes.splitlines()[1:]]  # after the block's heading: name, family, model
    assert rows == [[info.name, info.family, info.model] for info in list_recipes()]
    assert ["malmm_tiny_lvu", "malmm", "malmm_tiny"] in rows and ["memvit_tiny_k400", "memvit", "memvit_tiny"] in rows
