/**
 * Express 4, installed under the alias `express4` so the Express adapter is tested on both majors.
 * Its API, as the adapter and its tests use it, is typed by Express 5's declarations.
 */
declare module 'express4' {
  import express from 'express';
  export default express;
}
