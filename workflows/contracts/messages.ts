import { defineQuery } from '@temporalio/workflow';

/** Every lifecycle workflow answers this query with the step it is on (shown to operators and the edge). */
export const stepQuery = defineQuery<string>('step');
