// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'dist-*/**', 'node_modules/**', 'bench/results/**', 'coverage/**', '.scratch/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-console': 'off',
    },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { globals: { performance: 'readonly', console: 'readonly', process: 'readonly', Buffer: 'readonly' } },
  },
  {
    // Only the transport layer talks gRPC (see README "Layout").
    files: ['src/**/*.ts'],
    ignores: ['src/grpc/**', 'src/cli/**', 'src/main.ts', 'src/client/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['@grpc/*'], message: 'only src/grpc and the CLI client import gRPC' }] }],
    },
  },
);
