import { describe, expect, it } from 'vitest';
import { baselineCandidates, DEFAULT_RECIPES, parseRecipes, recipeCandidates } from '../../../cloud/distill/recipe.js';
import { UsageError } from '../../../shared/cli/errors.js';

describe('recipe candidates', () => {
  it('the default grid leads with labels only and includes low temperatures', () => {
    expect(DEFAULT_RECIPES[0]).toEqual({ temperature: 1, alpha: 0 });
    expect(DEFAULT_RECIPES.some((r) => r.temperature >= 2.5 && r.temperature <= 4 && r.alpha > 0)).toBe(true);
    expect(recipeCandidates(DEFAULT_RECIPES, 1e-3).every((c) => c.learningRate === 1e-3)).toBe(true);
  });

  it('the baseline gets as many candidates, learning rates nearest first', () => {
    expect(baselineCandidates(1e-3, 5).map((c) => c.learningRate)).toEqual([1e-3, 5e-4, 2e-3, 2.5e-4, 4e-3]);
    expect(baselineCandidates(1e-3, 1)).toEqual([{ temperature: 1, alpha: 0, learningRate: 1e-3 }]);
    expect(baselineCandidates(1e-3, 6).every((c) => c.alpha === 0)).toBe(true);
  });

  it('parses --recipes T:alpha lists', () => {
    expect(parseRecipes('1:0, 4:0.5,2.5:1')).toEqual([{ temperature: 1, alpha: 0 }, { temperature: 4, alpha: 0.5 }, { temperature: 2.5, alpha: 1 }]);
  });

  it.each(['', '4', '4:', ':0.5', '0:0.5', '4:1.5', '4:-1', 'a:b', '4:0.5;2:0', '4:0.5,,2:0'])('rejects %j with a UsageError naming --recipes', (bad) => {
    expect(() => parseRecipes(bad)).toThrow(UsageError);
    expect(() => parseRecipes(bad)).toThrow(/--recipes/);
  });
});
