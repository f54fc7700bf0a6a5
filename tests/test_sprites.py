"""refnet.sprites: the procedural dSprites-like data set."""
import numpy as np

from refnet import sprites


def test_sprites_are_binary_deterministic_and_carry_their_factors():
    imgs, factors, names = sprites.sprites(20, size=16, seed=3)
    assert imgs.shape == (20, 256) and factors.shape == (20, 5) and names == sprites.FACTOR_NAMES
    assert set(np.unique(imgs)) <= {0.0, 1.0}
    np.testing.assert_array_equal(sprites.render(factors, size=16), imgs)
    np.testing.assert_array_equal(sprites.sprites(20, size=16, seed=3)[0], imgs)


def test_factors_move_and_grow_the_shape():
    f = np.array([[0, 0, 0, 0, 3], [0, 0, 0, 7, 3], [0, 3, 0, 0, 3]])      # square: move x, grow
    a, b, c = sprites.render(f, size=32).reshape(3, 32, 32)
    assert a.sum() > 0 and a.sum() == b.sum()                               # a translate keeps area
    cols = lambda im: np.nonzero(im.any(0))[0].mean()                       # noqa: E731
    assert cols(b) > cols(a) + 5                                            # pos_x moves right
    assert c.sum() > 2 * a.sum()                                            # a larger scale
