import torch

from svg2.permute import permutation_from_labels, permute, unpermute


def test_permutation_sorts_stably_with_runs_equal_to_sizes():
    labels = torch.randint(0, 7, (3, 101))
    labels[:, :5] = 6  # make sure some label repeats at the front
    perm = permutation_from_labels(labels, 9)  # labels 7 and 8 are empty: 0-length runs
    sorted_labels = labels.gather(1, perm.order)
    assert (sorted_labels[:, 1:] >= sorted_labels[:, :-1]).all()
    for i in range(3):
        # stable: within a run, original positions increase
        for lab in range(9):
            pos = perm.order[i][sorted_labels[i] == lab]
            assert (pos[1:] > pos[:-1]).all()
        assert perm.sizes[i].tolist() == torch.bincount(labels[i], minlength=9).tolist()
    assert (perm.sizes[:, 7:] == 0).all()
    starts = torch.cumsum(perm.sizes, 1) - perm.sizes
    for i in range(3):
        for lab in range(7):
            s, n = int(starts[i, lab]), int(perm.sizes[i, lab])
            assert (sorted_labels[i, s:s + n] == lab).all()


def test_unpermute_inverts_permute():
    x = torch.randn(4, 33, 8)
    perm = permutation_from_labels(torch.randint(0, 5, (4, 33)), 5)
    assert torch.equal(unpermute(permute(x, perm), perm), x)
    assert torch.equal(perm.order.gather(1, perm.inverse), torch.arange(33).expand(4, 33))
