export * from './errors.js';
export * from './hosts.js';
export * from './operations.js';
export * from './search-attributes.js';
export * from './messages.js';
